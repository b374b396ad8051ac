"""Quality checks fire on frames made to break them; calendar, source-wide gaps, real demerger steps; reports stored; the gate."""
import datetime as dt, json, os, time
import numpy as np, pandas as pd
import pytest
from stock_nbs.config import load_settings
import polars as pl
from stock_nbs.config import load_settings
from stock_nbs.quality import (FACT_COLUMNS, validate_ohlc, detect_outliers, check_data_freshness, get_data_quality_report, quality_report,
                               output_gate, require_output_gate, QualityGateError)
from stock_nbs.clean import FLAGS
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from stock_nbs.store import Store, load_features

Q = load_settings(None, env={}).quality


def panel(frames:dict, dropped:dict|None=None, today='2030-01-01', q=Q):
    "The quality report of silver frames (ticker -> pandas bars, no flags) and dropped rows (ticker -> {rule: rows}), by ticker."
    silver = pl.concat([pl.from_pandas(f).with_columns(ticker=pl.lit(t), date=pl.col('date').cast(pl.Date), rule_hits=pl.lit(''), **{k: pl.lit(False) for k in FLAGS})
                        for t, f in frames.items()], how='diagonal_relaxed').sort('ticker', 'date')
    rej = pl.DataFrame([{'ticker': t, 'rule': r} for t, d in (dropped or {}).items() for r, n in d.items() for _ in range(n)], schema={'ticker': pl.String, 'rule': pl.String})
    rep = quality_report(silver, rej, q, today)
    return rep, rep.tickers.set_index('ticker')


def frame(close, dates=None, volume=None):
    n = len(close)
    return pd.DataFrame({'date': pd.to_datetime(dates) if dates is not None else pd.bdate_range('2024-01-01', periods=n),
                         'open': close, 'high': [c + 1 for c in close], 'low': [c - 1 for c in close], 'close': close,
                         'volume': volume if volume is not None else [100.] * n})


def test_validate_ohlc_fires_on_each_violation_and_passes_clean_bars():
    ok = frame([10., 11, 12])
    assert validate_ohlc(ok) == (True, [])
    assert validate_ohlc(ok.assign(high=[10., 9, 12]))[1] == ['High < Low violation detected (1 rows)', 'High not >= Open/Close']
    assert validate_ohlc(ok.assign(low=[9., 11.5, 11]))[1] == ['Low not <= Open/Close']
    assert validate_ohlc(ok.assign(close=[10., 0, 12], open=[10., 0, 12], low=[9., -1, 11]))[1] == ['Non-positive close prices found']


def test_seed_outlier_rules():
    df = frame([10.] * 30 + [100.])
    assert detect_outliers(df, 'iqr')['close'].tolist() == [False] * 30 + [True]
    assert detect_outliers(df, 'zscore', threshold=3)['close'].iloc[-1]
    with pytest.raises(ValueError, match="method must be 'iqr' or 'zscore'"):
        detect_outliers(df, 'mad')


def test_freshness_by_file_age(tmp_path):
    p = tmp_path/'x.parquet'; p.write_text('x')
    assert check_data_freshness(p, 24)[0]
    old = time.time() - 30 * 3600
    os.utime(p, (old, old))
    fresh, msg = check_data_freshness(p, 24)
    assert not fresh and msg.startswith('Data age: 30.0 hours (threshold: 24h)')


def test_known_nse_holiday_is_not_missing_and_a_removed_session_is():
    # August 2023: 15 August (Independence Day) is an NSE holiday; 16 August is removed from the data
    days = [d for d in pd.bdate_range('2023-08-01', '2023-08-31') if d.strftime('%m-%d') not in ('08-15', '08-16')]
    _, r = panel({'TCS.NS': frame([100.] * len(days), days)})
    assert r.loc['TCS.NS', 'missing_dates'] == '2023-08-16' and r.loc['TCS.NS', 'extra_sessions'] == 0
    days = pd.bdate_range('2023-08-01', '2023-08-31')
    _, r = panel({'TCS.NS': frame([100.] * len(days), days)})
    assert r.loc['TCS.NS', 'missing_sessions'] == 0 and r.loc['TCS.NS', 'extra_sessions'] == 1   # a bar on a holiday is reported


def test_a_date_missing_for_most_tickers_is_one_source_wide_gap():
    days = pd.bdate_range('2024-06-03', '2024-06-14')                      # NSE sessions, no holiday
    some = lambda *drop: frame(list(100. + np.arange(len(days) - len(drop))), [d for d in days if d.strftime('%m-%d') not in drop])
    frames = {f'T{i}.NS': some('06-05') for i in range(8)} | {'A.NS': some('06-05', '06-10'), 'B.NS': some()}
    rep, r = panel(frames)
    assert [str(d) for d in rep.source_gaps] == ['2024-06-05']
    assert r.missing_sessions.to_dict() == {**{f'T{i}.NS': 0 for i in range(8)}, 'A.NS': 1, 'B.NS': 0}
    assert r.loc['A.NS', 'missing_dates'] == '2024-06-10' and r.loc['T0.NS', 'source_gap_sessions'] == 1


def test_stale_steps_and_future_dates():
    f = frame([10., 10, 10, 10, 10, 11, 30, 31], volume=[100., 100, 100, 100, 100, 100, 100, 1000])
    _, r = panel({'TCS.NS': f}, today='2024-01-08')
    assert r.loc['TCS.NS', ['stale_runs', 'stale_sessions', 'steps', 'step_dates', 'future_dates']].tolist() == [1, 5, 1, '2024-01-09', 2]
    # (the last bar's tenfold volume is one busy day, not a step: volume steps are shifts of its median level)
    _, r = panel({'TCS.NS': f}, q=Q | {'stale_sessions': 6})
    assert r.loc['TCS.NS', 'stale_runs'] == 0


def test_ticker_report_counts_and_scores():
    clean = frame(list(100 + np.arange(60.)), dates=[d for d in pd.bdate_range('2024-02-01', periods=61) if d != pd.Timestamp('2024-03-08')])
    last = str(pd.bdate_range('2024-02-01', periods=61)[-1].date())            # the run date is the last bar's: nothing behind
    _, r = panel({'TCS.NS': clean}, today=last)
    # 8 March 2024 is an NSE holiday (Mahashivratri): the data rightly lacks it
    assert r.loc['TCS.NS', 'missing_sessions'] == 0 and r.loc['TCS.NS', 'quality_score'] == 100
    broken = clean.drop(index=[10, 11]).reset_index(drop=True)
    _, r = panel({'TCS.NS': broken}, {'TCS.NS': {'nulls': 3, 'duplicates': 4}}, today=last)
    assert r.loc['TCS.NS', 'missing_sessions'] == 2 and r.loc['TCS.NS', 'dropped_rows'] == 3      # duplicates are not a loss
    assert json.loads(r.loc['TCS.NS', 'clean_counts']) == {'duplicates_dropped': 4, 'nulls_dropped': 3}
    assert r.loc['TCS.NS', 'quality_score'] == pytest.approx(100 * (1 - 5 / 60), abs=0.01)
    seeds = get_data_quality_report(clean, 'TCS.NS')
    assert seeds['total_rows'] == 60 and seeds['quality_score'] == 100 and seeds['ohlc_validation'] == (True, [])


def test_output_gate():
    g = pl.LazyFrame(frame(list(np.arange(1., 21))).assign(ticker='X', sma_20=1., rsi_14=50.))
    assert output_gate(g, min_rows=20, today='2030-01-01') == []
    fails = output_gate(g.with_columns(high=pl.lit(0.5)).drop('sma_20'), min_rows=50, today='2024-01-10')
    assert fails[0] == '20 rows, fewer than [quality] min_rows = 50'
    assert fails[1] == 'missing required columns: sma_20'
    assert fails[2].startswith('future dates: 2024-01-11')
    assert fails[3].startswith('OHLC validation failed: High < Low')
    with pytest.raises(QualityGateError, match='output gate failed'):
        require_output_gate(g, min_rows=50)


@pytest.fixture(scope='module')
def upstox_run(tmp_path_factory, upstox_dir):
    root = tmp_path_factory.mktemp('upstox')
    tickers = sorted(f"{p.name.split('_')[0]}.NS" for p in upstox_dir.glob('*_2020-10-01_to_2025-09-30.csv'))
    cfg = load_settings(None, env={}, overrides={'universe.tickers': ' '.join(tickers), 'source.kind': 'csv', 'source.csv_dir': str(upstox_dir),
                                                  'source.csv_pattern': '{symbol}_*.csv', 'source.csv_columns': 'timestamp=date',
                                                  'source.start': '2020-10-01', 'storage.data_dir': str(root)})
    ingest(cfg, run_date='2025-09-30', progress=False)
    return cfg, transform(cfg, progress=False, today='2025-10-01')


def test_real_demergers_are_flagged_as_step_changes(upstox_run):
    cfg, res = upstox_run
    q = res.quality.set_index('ticker')
    assert '2023-07-20' in q.loc['RELIANCE.NS', 'gap_step_dates']       # Jio Financial demerger, unadjusted by Upstox
    assert '2025-01-06' in q.loc['ITC.NS', 'gap_step_dates']            # ITC Hotels demerger
    steps = pd.DataFrame(res.summary['gap_steps'])
    rel = steps[(steps.ticker == 'RELIANCE.NS') & (steps.date.str.startswith('2023-07-20'))].iloc[0]
    assert rel.gap == pytest.approx(1290.0 / 1354.4 - 1, abs=1e-4) and rel.sigmas < -12


def test_real_data_quality_report_is_stored_and_sane(upstox_run):
    cfg, res = upstox_run
    assert (res.tickers.status == 'ok').all() and res.gate == []
    stored = Store(cfg.data_dir).read('quality', '1d').to_pandas()
    assert len(stored) == 50 and res.summary['tickers'] == 50 and res.summary['gate'] == []
    q = stored.set_index('ticker')
    assert (q.missing_sessions == 0).all()                              # the vendor has every NSE session...
    assert (q.extra_sessions == 0).all()                                # ...and the special ones, listed apart, not held against a ticker
    assert {'2021-11-04', '2023-11-12', '2024-11-01', '2025-02-01'} <= set(res.summary['special_sessions'])   # Muhurat trading, the budget Saturday
    assert q.quality_score.between(90, 100).all()


def test_volume_steps_are_rare_on_real_data_and_catch_a_unit_change(upstox_run):
    cfg, res = upstox_run
    q = res.quality
    ticker_years = ((pd.to_datetime(q.last_date) - pd.to_datetime(q.first_date)).dt.days / 365.25).sum()
    assert q.steps.sum() / ticker_years <= 0.5                          # day-on-day ratios raised 4.3 per ticker-year here
    silver = Store(cfg.data_dir).read('silver', '1d', pl.col('ticker') == 'INFY.NS').drop(FACT_COLUMNS).sort('date')   # facts recomputed from the values
    unit = silver.with_columns(volume=pl.when(pl.col('date') >= dt.date(2023, 3, 1)).then(pl.col('volume') * 10).otherwise(pl.col('volume')))
    before, after = (quality_report(x, None, cfg.quality, '2025-10-01').tickers.iloc[0] for x in (silver, unit))
    new = set(after.step_dates.split(', ')) - set(before.step_dates.split(', '))
    assert before.steps == q.set_index('ticker').loc['INFY.NS', 'steps']     # the facts stored in silver are those of its values
    assert after.steps == before.steps + 1 and len(new) == 1           # one flag for the change, dated within a week of it
    assert dt.date(2023, 3, 1) <= dt.date.fromisoformat(new.pop()) <= dt.date(2023, 3, 8)


def test_source_wide_gap_in_a_run(tmp_path):
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS SBIN.NS ITC.NS', 'source.kind': 'synthetic',
                                                  'source.start': '2024-01-01', 'storage.data_dir': str(tmp_path), 'quality.min_rows': '100'})
    ingest(cfg, run_date='2024-03-28', progress=False)
    bronze = Store(cfg.data_dir).table('bronze', '1d')                      # the vendor skipped 14 March for 3 of 4 tickers
    bronze.delete("ticker IN ('TCS.NS', 'INFY.NS', 'SBIN.NS') AND date = '2024-03-14'")
    bronze.delete("ticker = 'ITC.NS' AND date = '2024-02-05'")
    res = transform(cfg, progress=False, today='2024-03-28')
    assert res.summary['source_gaps'] == ['2024-03-14']
    q = res.quality.set_index('ticker')
    assert q.loc['TCS.NS', 'missing_sessions'] == 0 and q.loc['TCS.NS', 'source_gap_sessions'] == 1
    assert q.loc['ITC.NS', 'missing_sessions'] == 1 and q.loc['ITC.NS', 'missing_dates'] == '2024-02-05'


def test_gate_checks_every_row_written_to_the_dataset(tmp_path):
    "Bars with broken OHLC kept by the silver step (policy flag) and too few rows fail the gate of a real transform."
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS', 'source.kind': 'synthetic', 'source.start': '2024-01-01',
                                                  'source.synthetic_faults': 'ohlc', 'source.synthetic_fault_rate': '0.05', 'clean.ohlc': 'flag',
                                                  'quality.min_rows': '100000', 'storage.data_dir': str(tmp_path/'d')})
    ingest(cfg, run_date='2024-06-28', progress=False)
    res = transform(cfg, progress=False, today='2024-06-28')
    ds = load_features(settings=cfg)
    bad = int((ds.high < ds.low).sum())
    assert bad > 0 and res.gate[0] == f'{len(ds)} rows, fewer than [quality] min_rows = 100000'
    assert res.gate[1].startswith(f'OHLC validation failed: High < Low violation detected ({bad} rows)')
    cfg2 = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS', 'source.kind': 'synthetic', 'source.start': '2024-01-01',
                                                   'quality.min_rows': '10', 'storage.data_dir': str(tmp_path/'d')})
    assert transform(cfg2, progress=False, today='2024-06-28').gate == []   # repaired by default: the gate passes
    res = transform(cfg2, progress=False, today='2024-06-20')               # a dataset holding days after "today"
    assert res.gate == ['future dates: 2024-06-21, 2024-06-24, 2024-06-25, 2024-06-26, 2024-06-27 (+1)']
