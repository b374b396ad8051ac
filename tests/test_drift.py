"""Drift: shifts found, identical samples not, BH, Tarone's filter, baselines, alert idempotence, the hook, the report, the evaluation."""
import json, sys
import numpy as np, pandas as pd
import pytest
from scipy import stats
from stock_nbs.config import load_settings
from stock_nbs.drift import (compare, benjamini_hochberg, decide, rollup, read_baseline, create_baseline, baseline_path,
                             evaluate, calibrated_threshold, DriftError)
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform, drift_stage
from stock_nbs.store import Store, with_year
import polars as pl
from stock_nbs.drift import test_ticker as ticker_tests   # (renamed so pytest does not collect it)


def drift_settings(**over):
    return load_settings(None, env={}, overrides={f'drift.{k}': v for k, v in over.items()}).drift


def gold(returns, start='2023-01-02'):
    r = np.asarray(returns, float)
    close = 100 * np.exp(np.cumsum(r))
    g = pd.DataFrame({'date': pd.bdate_range(start, periods=len(r)), 'close': close, 'daily_return': np.r_[np.nan, np.diff(close) / close[:-1]]})
    g['sma_20'] = g.close.rolling(20).mean(); g['volatility'] = g.daily_return.rolling(20).std()
    g['rsi_14'] = 50 + 10 * np.tanh(pd.Series(r).rolling(14).mean().to_numpy() * 100); g['macd'] = g.close.ewm(span=12).mean() - g.close.ewm(span=26).mean()
    return g


def test_a_known_shift_is_found_and_identical_distributions_are_not():
    rng = np.random.default_rng(3)
    base = rng.normal(size=60)
    shifted = compare(base, rng.normal(3, 1, size=7))
    same = compare(base, base[:7].copy())
    assert shifted['p_value'] < 0.01 and shifted['statistic'] > 0.7 and shifted['wasserstein'] > 1.5
    assert same['p_value'] > 0.5 and same['wasserstein'] < shifted['wasserstein'] / 3


def test_p_values_are_calibrated_on_iid_data():
    rng = np.random.default_rng(4)
    p = np.array([compare(rng.standard_t(4, size=60), rng.standard_t(4, size=7))['p_value'] for _ in range(2000)])
    assert (p <= 0.05).mean() <= 0.05 and (p <= 0.05).mean() > 0.02     # at most alpha, and not absurdly conservative


def test_autocorrelated_features_get_honest_p_values():
    rng = np.random.default_rng(5)
    raw = smooth = 0
    for _ in range(300):                                                # an RSI-like 14-day smoothing of noise, no drift
        x = pd.Series(rng.normal(size=120)).rolling(14).mean().dropna().to_numpy()
        raw += stats.ks_2samp(x[:60], x[60:67]).pvalue <= 0.05
        smooth += compare(x[:60], x[60:67])['p_value'] <= 0.05
    assert raw / 300 > 0.3 and smooth / 300 <= 0.05                     # the seeds' test cries wolf; the adjusted one does not


def test_benjamini_hochberg_on_a_known_list():
    p = [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216]
    m = len(p)
    by_hand = np.minimum.accumulate([min(1, p[i] * m / (i + 1)) for i in range(m)][::-1])[::-1]
    np.testing.assert_allclose(benjamini_hochberg(p), by_hand)
    assert (benjamini_hochberg(p) <= 0.05).sum() == 2


def test_tarone_filter_keeps_untestable_tests_out_of_the_correction():
    d = drift_settings()
    t = pd.DataFrame({'ticker': ['A'] * 3, 'feature': ['x', 'y', 'z'], 'method': 'ks', 'statistic': 0.9, 'p_value': [0.004, 0.2, 0.3],
                      'p_min': [1e-6, 0.2, 0.3], 'threshold': None, 'wasserstein': 1.0})
    out = decide(t.assign(**{c: 0 for c in ('baseline_start', 'baseline_end', 'current_start', 'current_end', 'baseline_n', 'current_n', 'n_eff_baseline', 'n_eff_current', 'autocorr')}), d)
    assert out.q_value.tolist() == [0.004, 1.0, 1.0] and out.drift.tolist() == [True, False, False]


def test_default_features_are_scale_free_and_levels_are_warned(tmp_path, caplog):
    rng = np.random.default_rng(6)
    g = gold(rng.normal(0, 0.01, 200))
    rows = ticker_tests(g, 'A.NS', drift_settings())
    assert {r['feature'] for r in rows} == {'daily_return', 'abs_return', 'rsi_14', 'vol_ratio', 'close_sma', 'macd_norm'}
    cfg = load_settings(None, env={}, overrides={'drift.features': 'close sma_20 daily_return', 'storage.data_dir': str(tmp_path), 'universe.tickers': 'A.NS'})
    Store(tmp_path).append('gold', '1d', with_year(pl.from_pandas(g.assign(ticker='A.NS')).with_columns(pl.col('date').cast(pl.Date))))
    with caplog.at_level('WARNING', logger='stock_nbs'):
        drift_stage(cfg, ['A.NS'], '1d', 'r1')
    assert 'drift on levels close, sma_20' in caplog.text and 'not trustworthy' in caplog.text
    with pytest.raises(DriftError, match="'nope' is neither a gold column"):
        ticker_tests(g, 'A.NS', drift_settings(features='nope'))


def test_calibrated_thresholds_from_own_history():
    rng = np.random.default_rng(7)
    x = pd.Series(rng.normal(size=3000)).rolling(14).mean().dropna().to_numpy()
    thr = calibrated_threshold(x, 60, 7, 0.99)
    assert 0.7 < thr <= 1.0                                             # smoothed series: chance D is large
    d = drift_settings(calibrate='true', features='rsi_14')
    g = gold(rng.normal(0, 0.01, 3000))
    t = decide(pd.DataFrame(ticker_tests(g, 'A.NS', d)), d)
    assert t.method.tolist() == ['ks_calibrated'] and t.threshold.iloc[0] > 0.5


@pytest.fixture
def universe(tmp_path):
    tickers = 'TCS.NS INFY.NS SBIN.NS ITC.NS RELIANCE.NS HDFCBANK.NS'
    cfg = load_settings(None, env={}, overrides={'universe.tickers': tickers, 'source.kind': 'synthetic', 'source.start': '2023-01-01',
                                                  'source.synthetic_regime_start': '2024-06-20', 'source.synthetic_regime_vol': '6',
                                                  'storage.data_dir': str(tmp_path/'data'), 'quality.min_rows': '100'})
    ingest(cfg, run_date='2024-06-28', progress=False)
    transform(cfg, progress=False, today='2024-06-28')
    return cfg


def test_drift_stage_alerts_rollup_report_and_idempotence(universe, tmp_path):
    cfg = universe
    tests, roll, summary = drift_stage(cfg, cfg.universe.tickers, '1d', 'run-1', tmp_path/'reports')
    assert summary['status'] == 'drift' and summary['mode'] == 'rolling' and summary['drifted'] >= 3
    drifted = tests[tests.drift]
    assert set(drifted.feature) <= {'abs_return', 'daily_return'} and 'abs_return' in set(drifted.feature)
    a = drifted.iloc[0]
    assert a.current_start == pd.Timestamp('2024-06-20') and a.current_end == pd.Timestamp('2024-06-28') and a.current_n == 7 and a.baseline_n == 60
    assert set(roll.recommendation) <= {'ok', 'watch', 'retrain'} and (roll.drifted > 0).sum() >= 3
    alerts = lambda: Store(cfg.data_dir).read('drift_alerts', '1d').to_pandas()
    first = alerts()
    assert list(first.columns[:5]) == ['ticker', 'feature', 'method', 'statistic', 'p_value'] and {'q_value', 'detected_at', 'run_id'} <= set(first.columns)
    drift_stage(cfg, cfg.universe.tickers, '1d', 'run-2', tmp_path/'reports')   # the same day again
    again = alerts()
    assert len(again) == len(first) and set(again.run_id) == {'run-2'}
    runs = Store(cfg.data_dir).read('drift_tests', '1d').to_pandas()
    assert set(runs.run_id) == {'run-1', 'run-2'} and len(runs) == 2 * len(tests)             # every run's tests, kept
    html = (tmp_path/'reports'/'run-1_drift.html').read_text()
    assert '<h1>Drift report</h1>' in html and 'abs_return' in html and 'outline: 2px solid' in html and '<script' not in html
    unable = int((tests.p_min > tests.threshold.astype(float))[~tests.method.isin(['ks_calibrated', 'market_calibrated'])].sum())
    assert unable > 0 and f'{unable} tests could not have alerted' in html                 # smoothed features at 7 sessions: said, and left out
    assert 'market:XBOM' in set(tests.ticker) and 'market:XBOM' in html                     # the market's own test


def test_hook_receives_the_summary_as_json(universe, tmp_path):
    out = tmp_path/'hook.json'
    hook = f"{sys.executable} -c \"import sys; open('{out}', 'w').write(sys.stdin.read())\""
    cfg = load_settings(None, env={}, overrides={**{f'universe.tickers': ' '.join(universe.universe.tickers)}, 'storage.data_dir': str(universe.data_dir),
                                                  'drift.hook': hook})
    tests, roll, summary = drift_stage(cfg, cfg.universe.tickers, '1d', 'run-h')
    got = json.loads(out.read_text())
    assert summary['hook']['returncode'] == 0
    assert got['run_id'] == 'run-h' and got['status'] == 'drift' and got['drifted'] == summary['drifted'] == len(got['alerts'])
    assert {'ticker', 'feature', 'statistic', 'p_value', 'q_value', 'current_start'} <= set(got['alerts'][0])


def test_frozen_baseline_records_its_window_and_is_used(universe):
    cfg = universe
    path, meta = create_baseline(cfg, '1d', end=pd.Timestamp('2024-05-31'))
    rows, stored = read_baseline(path)
    assert stored['window_end'] == '2024-05-31' and stored['sessions'] == 60 and stored['tickers'] == 6
    assert rows.groupby(['ticker', 'feature']).size().max() == 60 and rows.date.max() == pd.Timestamp('2024-05-31')
    tests, roll, summary = drift_stage(cfg, cfg.universe.tickers, '1d', 'run-f')
    assert summary['mode'] == 'frozen' and '2024-05-31' in summary['baseline']
    own = tests[~tests.ticker.str.startswith('market:')]
    assert len(own) and (own.baseline_end == pd.Timestamp('2024-05-31')).all()
    market = tests[tests.ticker.str.startswith('market:')]                 # the market's test is judged against its own past windows
    assert (market.baseline_end > pd.Timestamp('2024-05-31')).all() and (market.method == 'market_calibrated').all()
    with pytest.raises(DriftError, match='no baseline at .*stock-nbs baseline'):
        read_baseline(baseline_path(cfg, '5m'))


def test_evaluation_runs_and_separates_the_configurations():
    s = load_settings(None, env={})
    res = evaluate(s.drift, s.features, runs=3, n_tickers=20, progress=False)
    assert res['seeds_raw']['false_alarm_rate'] == 1.0                  # the seeds' raw test alarms on drift-free data
    assert res['default']['false_alarm_rate'] == 0.0 and res['default']['detection_rate'] >= 2 / 3
    assert res['default']['tests_per_run'] == 20 * 6 + 1                # and the market's own test


def test_backtest_replays_only_past_data_sees_an_onset_and_reports_it(tmp_path):
    from stock_nbs.drift import backtest, backtest_summary
    from conftest import run_cli
    ini = tmp_path/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS SBIN.NS ITC.NS RELIANCE.NS HDFCBANK.NS\n[source]\nkind = synthetic\nstart = 2022-06-01\n"
                   "synthetic_regime_start = 2024-05-02\nsynthetic_regime_vol = 3\n[quality]\nmin_rows = 10\n[storage]\ndata_dir = data\n[run]\nreports_dir = reports\n")
    cfg = load_settings(ini, env={})
    ingest(cfg, run_date='2024-06-28', progress=False); transform(cfg, progress=False, today='2024-06-28')
    b = backtest(cfg, start='2023-06-01', every=5, report_dir=tmp_path/'reports')
    runs = b.runs.set_index('run_date')
    assert b.tests.groupby('run_date').current_end.max().le(b.tests.groupby('run_date').run_date.first()).all()   # nothing after a run's date
    calm, onset = runs.loc[:'2024-04-30'], runs.loc['2024-05-10':'2024-05-24']          # the regime starts 2 May: tripled volatility
    assert calm.any_alert.mean() <= 0.1 and onset.any_alert.any() and onset.reference_alert.any()
    again = backtest(cfg, start='2023-06-01', end='2024-05-17', every=5)                 # a shorter replay: the same run dates give the same tests
    pd.testing.assert_frame_equal(again.tests.reset_index(drop=True), b.tests[b.tests.run_date <= '2024-05-17'].reset_index(drop=True))
    html = (tmp_path/'reports'/'drift_backtest.html').read_text()
    assert 'data:image/png;base64,' in html and 'reference' in html and (tmp_path/'reports'/'drift_backtest.png').stat().st_size > 10_000
    assert backtest_summary(b).loc['all', 'run_dates'] == len(runs)
    p = run_cli('drift-backtest', '--settings', ini, '--start', '2024-03-01', '--every', '10', check=0)
    assert 'run dates replayed' in p.stdout and 'report: ' in p.stdout
