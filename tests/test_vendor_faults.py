"""Real vendor faults: files holding several tickers' blocks, absurd values, undecodable bytes, stale tickers, one company's
prices under two names, a missing FX ticker, a run past the exchange calendar's end."""
import datetime as dt, logging
import numpy as np, pandas as pd, polars as pl
import pytest
from stock_nbs import load_features
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest, empty_bronze
from stock_nbs.pipeline import transform
from stock_nbs.quality import calendar_end, known_sessions
from stock_nbs.sources import CsvSource, SyntheticSource
from stock_nbs.store import Store


def bars(ticker, start='2023-01-02', end='2024-06-28', seed=0):
    "A ticker's daily bars as a vendor file would hold them (the synthetic source's, so consistent)."
    df = SyntheticSource(seed=seed).fetch([ticker], start, end).bars[ticker]
    return pd.DataFrame({'Date': df.date.dt.strftime('%Y-%m-%d'), 'Open': df.open, 'High': df.high, 'Low': df.low, 'Close': df.close,
                         'Adj Close': df.adj_close, 'Volume': df.volume.astype('int64')})


def csv_settings(root, tickers, **over):
    return load_settings(None, env={}, overrides={'universe.tickers': tickers, 'source.kind': 'csv', 'source.csv_dir': str(root/'csv'),
                                                  'source.start': '2023-01-01', 'storage.data_dir': str(root/'data'), 'quality.min_rows': '10', **over})


def yfinance_multi(blocks: dict, ticker_row=True) -> str:
    "Text of a file as yfinance's multi-ticker download writes it: (Price, Ticker) column levels, fields grouped, tickers side by side."
    fields = ['Adj Close', 'Close', 'High', 'Low', 'Open', 'Volume']
    names = list(blocks)
    dates = blocks[names[0]].Date
    head = ['Price,' + ','.join(f for f in fields for _ in names)]
    if ticker_row: head += ['Ticker,' + ','.join(t for _ in fields for t in names), 'Date' + ',' * (len(fields) * len(names))]
    else: head = ['Date,' + ','.join(f for f in fields for _ in names)]
    rows = [','.join([d] + [str(blocks[t][f].iloc[i]) for f in fields for t in names]) for i, d in enumerate(dates)]
    return '\n'.join(head + rows) + '\n'


def test_a_file_of_several_tickers_blocks_yields_only_its_own_ticker_or_is_refused(tmp_path):
    tcs, infy = bars('TCS.NS'), bars('INFY.NS')
    (tmp_path/'TCS.NS.csv').write_text(yfinance_multi({'INFY.NS': infy, 'TCS.NS': tcs}))          # the block order puts another ticker first
    got = CsvSource(tmp_path).fetch(['TCS.NS'], '2023-01-01', '2024-06-28')
    assert not got.failed and np.allclose(got.bars['TCS.NS'].close, tcs.Close) and not np.allclose(got.bars['TCS.NS'].close, infy.Close)
    (tmp_path/'TCS.NS.csv').write_text(yfinance_multi({'INFY.NS': infy, 'SBIN.NS': bars('SBIN.NS')}))
    assert 'holds the blocks of INFY.NS, SBIN.NS, not of TCS.NS' in CsvSource(tmp_path).fetch(['TCS.NS'], '2023-01-01', '2024-06-28').failed['TCS.NS']
    (tmp_path/'TCS.NS.csv').write_text(yfinance_multi({'INFY.NS': infy, 'TCS.NS': tcs}, ticker_row=False))   # duplicate headers, no Ticker row
    why = CsvSource(tmp_path).fetch(['TCS.NS'], '2023-01-01', '2024-06-28').failed['TCS.NS']
    assert str(tmp_path/'TCS.NS.csv') in why and 'duplicate column(s) adj_close, close, high, low, open, volume' in why and 'none is read' in why


def test_a_non_utf8_byte_fails_only_its_ticker_naming_file_and_offset(tmp_path):
    (tmp_path/'csv').mkdir()
    bars('INFY.NS').to_csv(tmp_path/'csv'/'INFY.NS.csv', index=False)
    raw = bars('TCS.NS').to_csv(index=False).encode()
    (tmp_path/'csv'/'TCS.NS.csv').write_bytes(raw[:20] + b'\xff' + raw[20:])
    rep = ingest(csv_settings(tmp_path, 'TCS.NS INFY.NS'), run_date='2024-06-28', progress=False).set_index('ticker')
    assert rep.loc['INFY.NS', 'status'] == 'updated' and rep.loc['TCS.NS', 'status'] == 'failed'
    assert f"{tmp_path/'csv'/'TCS.NS.csv'}: byte 20 (0xff) is not UTF-8" in rep.loc['TCS.NS', 'error']


def test_absurd_bars_are_rejected_at_ingest_and_never_reach_gold(tmp_path, caplog):
    (tmp_path/'csv').mkdir()
    b = bars('TCS.NS')
    b.loc[100, ['Open', 'High', 'Low', 'Close', 'Adj Close']] = 1e300
    b.loc[200, 'Close'] = np.inf
    b.to_csv(tmp_path/'csv'/'TCS.NS.csv', index=False)
    cfg = csv_settings(tmp_path, 'TCS.NS')
    with caplog.at_level(logging.WARNING, logger='stock_nbs'):
        rep = ingest(cfg, run_date='2024-06-28', progress=False)
    assert rep.rows_rejected.tolist() == [2] and rep.rows_total.tolist() == [len(b) - 2]
    assert any(b.Date[100] in r.getMessage() and 'rejected at ingest' in r.getMessage() for r in caplog.records)
    res = transform(cfg, progress=False, today='2024-06-28')
    assert res.gate == []
    gold = load_features(settings=cfg)
    assert np.isfinite(gold.select_dtypes('float').to_numpy(dtype=float, na_value=0)).all() and gold.close.max() < 1e6


def test_a_stale_ticker_is_flagged_and_degrades_the_run(tmp_path):
    from stock_nbs.pipeline import DailyRun
    (tmp_path/'csv').mkdir()
    bars('TCS.NS').to_csv(tmp_path/'csv'/'TCS.NS.csv', index=False)
    bars('INFY.NS', end='2024-06-14').to_csv(tmp_path/'csv'/'INFY.NS.csv', index=False)   # the vendor stopped updating it (9 sessions: 17 June was a holiday)
    run = DailyRun(csv_settings(tmp_path, 'TCS.NS INFY.NS'), '2024-06-28').open()
    run.ingest(progress=False); res = run.transform(progress=False)
    q = res.quality.set_index('ticker')
    assert q.loc['INFY.NS', 'stale'] and q.loc['INFY.NS', 'sessions_behind'] == 9 and not q.loc['TCS.NS', 'stale']
    assert q.loc['INFY.NS', 'quality_score'] < q.loc['TCS.NS', 'quality_score'] - 1
    m = run.finish()
    assert m['status'] == 'degraded' and any(r.startswith('stale: INFY.NS 9 sessions behind (last bar 2024-06-14)') for r in m['reasons'])


def test_one_companys_prices_under_a_second_name_fail_the_later_one(tmp_path):
    (tmp_path/'csv').mkdir()
    tcs = bars('TCS.NS')
    tcs.to_csv(tmp_path/'csv'/'TCS.NS.csv', index=False)
    bars('SBIN.NS').to_csv(tmp_path/'csv'/'SBIN.NS.csv', index=False)
    ingest(csv_settings(tmp_path, 'TCS.NS SBIN.NS'), run_date='2024-06-27', progress=False)
    tcs.assign(**{c: tcs[c] * 1.5 for c in ('Open', 'High', 'Low', 'Close', 'Adj Close')}).to_csv(tmp_path/'csv'/'INFY.NS.csv', index=False)  # TCS's block, scaled
    cfg = csv_settings(tmp_path, 'TCS.NS SBIN.NS INFY.NS')
    ingest(cfg, run_date='2024-06-28', progress=False)
    res = transform(cfg, progress=False, today='2024-06-28')
    t = res.tickers.set_index('ticker')
    assert t.loc['TCS.NS', 'status'] == 'ok' and t.loc['SBIN.NS', 'status'] == 'ok' and t.loc['INFY.NS', 'status'] == 'failed'
    assert "INFY.NS: its last 20 daily returns equal TCS.NS's" in t.loc['INFY.NS', 'error']
    assert res.quality.set_index('ticker').loc['TCS.NS', 'same_series_as'] == 'INFY.NS'


def test_a_universe_without_the_fx_ticker_still_converts_us_prices(tmp_path):
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS AAPL', 'source.kind': 'synthetic', 'source.start': '2023-01-01',
                                                  'storage.data_dir': str(tmp_path), 'quality.min_rows': '10'})
    rep = ingest(cfg, run_date='2024-06-28', progress=False)
    assert rep.ticker.tolist() == ['TCS.NS', 'AAPL', 'USDINR=X'] and (rep.status == 'updated').all()
    res = transform(cfg, progress=False, today='2024-06-28')
    assert (res.tickers.status == 'ok').all()
    aapl = load_features('AAPL', settings=cfg)
    assert aapl.fx_rate.between(70, 100).all() and aapl.close.min() > 1000                  # in INR, at ~83 per USD


def test_a_run_past_the_calendars_end_says_so_and_checks_weekdays_less_the_given_holidays(tmp_path, caplog):
    end = calendar_end('XBOM')
    holiday = pd.bdate_range(end + dt.timedelta(days=1), periods=10)[4].date()                  # a weekday after the end, named a holiday
    known = [d.astype(dt.date) for d in known_sessions('XBOM')[-25:]]                            # the calendar's last sessions, then weekdays
    days = known + [d.date() for d in pd.bdate_range(end + dt.timedelta(days=1), end + dt.timedelta(days=20)) if d.date() != holiday]
    missing = days[-5]                                                                           # and one weekday session with no bar
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS', 'storage.data_dir': str(tmp_path), 'quality.min_rows': '1',
                                                  'quality.holidays': str(holiday)})
    rows = pl.DataFrame({'ticker': 'TCS.NS', 'date': [d for d in days if d != missing], 'seq': 0, 'open': 100., 'high': 101., 'low': 99., 'close': 100.5,
                         'adj_close': 100.5, 'volume': 1e5, 'source': 'csv', 'fetched_at': dt.datetime(2026, 11, 30, tzinfo=dt.timezone.utc)})
    rows = rows.with_columns(close=pl.col('close') + pl.int_range(pl.len()) * 0.1, high=pl.col('high') + pl.int_range(pl.len()) * 0.1,
                             year=pl.col('date').dt.year().cast(pl.Int32), seq=pl.col('seq').cast(pl.Int16))
    Store(tmp_path).overwrite('bronze', '1d', rows.select(empty_bronze('1d').columns), None, 'test')             # bars after the end: no source can fetch them today
    with caplog.at_level(logging.WARNING, logger='stock_nbs'):
        res = transform(cfg, progress=False, today=days[-1])
    q = res.quality.set_index('ticker').loc['TCS.NS']
    assert q.missing_sessions == 1 and q.missing_dates == str(missing) and q.extra_sessions == 0
    assert any(f"XBOM: exchange_calendars knows sessions only up to {end}" in n and '1 dates after it in [quality] holidays' in n for n in res.summary['calendar_notes'])
    assert sum('exchange_calendars knows sessions only up to' in r.getMessage() for r in caplog.records) == 1


class SplitStub:
    """yfinance.Ticker inside yf.download, as tests/test_yahoo.py's stub, with prices set by the date alone (so a re-fetch of
    any window agrees) times `factor`: what Yahoo serves before and after it rescales a ticker's history for a split."""
    factor = 1.0

    def __init__(self, ticker):
        self.ticker, self._price_history = ticker, type('PH', (), {'_last_error': None})()

    def history(self, start=None, end=None, interval='1d', **kw):
        idx = pd.DatetimeIndex(pd.bdate_range(start, pd.Timestamp(end) - pd.Timedelta(days=1)), name='Date').tz_localize('Asia/Kolkata')
        base = (1000 + (idx.tz_localize(None) - pd.Timestamp('2024-01-01')).days.to_numpy() * 2.0) * SplitStub.factor
        return pd.DataFrame({'Open': base, 'High': base * 1.01, 'Low': base * 0.99, 'Close': base, 'Adj Close': base * 0.98,
                             'Volume': np.full(len(idx), 1000, dtype=np.int64)}, index=idx)


def test_a_split_rescaling_yahoos_history_is_found_refetched_whole_and_recorded(tmp_path, monkeypatch):
    import yfinance.multi
    monkeypatch.setattr(yfinance.multi, 'Ticker', SplitStub)
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS', 'source.kind': 'yahoo', 'source.start': '2024-01-01',
                                                  'storage.data_dir': str(tmp_path), 'quality.min_rows': '10'})
    SplitStub.factor = 1.0
    ingest(cfg, run_date='2024-06-27', progress=False)
    SplitStub.factor = 0.2                                                  # a 1:5 split: Yahoo now serves every past bar / 5
    rep = ingest(cfg, run_date='2024-06-28', progress=False).set_index('ticker')
    assert (rep.status == 'updated').all() and rep.loc['TCS.NS', 'values_changed'] > 100      # the whole history replaced, counted
    acts = Store(tmp_path).read('corporate_actions', '1d').sort('ticker')
    assert acts.select('ticker', 'column', pl.col('factor').round(9), 'found_on').rows() == [
        ('INFY.NS', 'close', 0.2, dt.date(2024, 6, 28)), ('TCS.NS', 'close', 0.2, dt.date(2024, 6, 28))]
    bronze = Store(tmp_path).read('bronze', '1d', pl.col('ticker') == 'TCS.NS').sort('date')
    assert bronze['close'][0] == pytest.approx(1000 * 0.2) and bronze['close'][-1] == pytest.approx((1000 + 179 * 2) * 0.2)
    transform(cfg, progress=False, today='2024-06-28')
    gold = load_features('TCS.NS', settings=cfg)
    assert gold.daily_return.abs().max() < 0.01                             # no false 80% drop where old and new bars meet


def test_a_csv_file_replaced_by_a_rescaled_one_is_caught_the_same_way(tmp_path):
    (tmp_path/'csv').mkdir()
    b = bars('TCS.NS', end='2024-06-27')
    b.to_csv(tmp_path/'csv'/'TCS.NS.csv', index=False)
    cfg = csv_settings(tmp_path, 'TCS.NS')
    ingest(cfg, run_date='2024-06-27', progress=False)
    b = bars('TCS.NS', end='2024-06-28')
    b.assign(**{c: b[c] / 2 for c in ('Open', 'High', 'Low', 'Close', 'Adj Close')}, Volume=b.Volume * 2).to_csv(tmp_path/'csv'/'TCS.NS.csv', index=False)
    ingest(cfg, run_date='2024-06-28', progress=False)
    assert Store(tmp_path/'data').read('corporate_actions', '1d').select('ticker', 'column', pl.col('factor').round(9)).rows() == [('TCS.NS', 'close', 0.5)]
    stored = Store(tmp_path/'data').read('bronze', '1d').sort('date')
    np.testing.assert_allclose(stored['close'].to_numpy(), (b.Close / 2).to_numpy())


def test_intraday_bars_after_the_clock_never_land_and_stamps_are_reported_in_each_markets_zone(tmp_path):
    from stock_nbs.ingest import split_absurd
    from stock_nbs.quality import output_gate
    now = dt.datetime(2024, 6, 28, 15, 2, tzinfo=dt.timezone.utc)                    # 11:02 in New York: later bars are not yet traded
    stamps = [now - dt.timedelta(minutes=30), now - dt.timedelta(minutes=15), now + dt.timedelta(minutes=13), now + dt.timedelta(hours=5)]
    rows = pl.DataFrame({'ticker': 'AAPL', 'date': stamps, **{c: [200., 200.5, 201., 201.5] for c in ('open', 'high', 'low', 'close', 'adj_close')}},
                        schema_overrides={'date': pl.Datetime('us', 'UTC')})
    kept, late = split_absurd(rows, 1000, now)
    assert kept['date'].to_list() == stamps[:2] and late['reason'].str.contains("after the run's clock").all()
    gold = rows.lazy().with_columns(date=pl.col('date') + (dt.datetime.now(dt.timezone.utc) - now), sma_20=pl.lit(1.), rsi_14=pl.lit(50.))
    assert output_gate(gold, 1, dt.date.today() + dt.timedelta(days=1))[0].startswith('2 bars stamped after now')
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS AAPL USDINR=X', 'source.kind': 'synthetic', 'source.intraday_days': '3',
                                                  'storage.data_dir': str(tmp_path), 'quality.min_rows': '10'})
    ingest(cfg, run_date='2024-06-28', interval='1d', progress=False)
    ingest(cfg, run_date='2024-06-28', interval='15m', progress=False)
    q = transform(cfg, interval='15m', progress=False, today='2024-06-28').quality.set_index('ticker')
    assert q.loc['TCS.NS', 'first_date'].endswith('+05:30') and q.loc['AAPL', 'first_date'].endswith('-04:00')
    assert q.loc['TCS.NS', 'first_date'].split('T')[1].startswith('09:15')                 # the NSE open, in India's time
