"""Gold features: TA-Lib parity (synthetic and real Upstox data), the conventions behind it, extras from settings, warm-up."""
import numpy as np, pandas as pd
import pytest
import talib
from stock_nbs.config import load_settings
from stock_nbs.clean import clean_bars
from stock_nbs.features import compute_features, feature_names, indicator_fold, panel_fold
from stock_nbs.sources import SyntheticSource, CsvSource


def settings(**features):
    return load_settings(None, env={}, overrides={f'features.{k}': v for k, v in features.items()})


def assert_parity(gold, close, f, tol=1e-9):
    "Every gold feature equals TA-Lib's wherever TA-Lib gives a value."
    c = close.to_numpy(float).copy()
    ref = {'sma_20': talib.SMA(c, 20), 'sma_50': talib.SMA(c, 50), 'rsi_14': talib.RSI(c, 14)}
    ref['macd'], ref['macd_signal'], ref['macd_hist'] = talib.MACD(c, 12, 26, 9)
    idx = gold.index
    for k, r in ref.items():
        r = r[idx]
        ok = ~np.isnan(r)
        assert ok.sum() > 0.9 * len(idx), k
        np.testing.assert_allclose(gold[k].to_numpy()[ok], r[ok], rtol=0, atol=tol, err_msg=k)


def wilder_rsi(c, n=14):
    "RSI written from Wilder's definition: mean of the first n changes, then avg = (avg*(n-1) + x)/n."
    d = np.diff(c); up, dn = np.clip(d, 0, None), np.clip(-d, 0, None)
    out = np.full(len(c), np.nan)
    au, ad = up[:n].mean(), dn[:n].mean()
    out[n] = 100 - 100 / (1 + au / ad)
    for i in range(n + 1, len(c)):
        au, ad = (au * (n - 1) + up[i - 1]) / n, (ad * (n - 1) + dn[i - 1]) / n
        out[i] = 100 - 100 / (1 + au / ad)
    return out


def sma_seeded_ema(x, n, first=None):
    "EMA whose first value is the simple mean of the n values from `first` (TA-Lib's convention)."
    out = np.full(len(x), np.nan)
    first = np.argmax(~np.isnan(x)) if first is None else first
    out[first + n - 1] = np.mean(x[first:first + n])
    for i in range(first + n, len(x)):
        out[i] = out[i - 1] + 2 / (n + 1) * (x[i] - out[i - 1])
    return out


@pytest.mark.parametrize('ticker', ['TCS.NS', 'AAPL', 'USDINR=X', 'M&M.NS'])
def test_parity_with_talib_on_synthetic_data(ticker):
    s = settings()
    b = SyntheticSource(seed=9).bars(ticker, '2015-01-01', '2024-12-31')
    silver = clean_bars(b, ticker, s.clean, fx=SyntheticSource(seed=9).bars('USDINR=X', '2015-01-01', '2024-12-31'))[0]
    gold = compute_features(silver, ticker, s.features.copy() | {'warmup': 'flag'})
    assert_parity(gold, silver.close, s.features)


def test_parity_with_talib_on_every_upstox_ticker(upstox_dir):
    s = settings()
    src = CsvSource(upstox_dir, '{symbol}_*.csv', {'timestamp': 'date'})
    tickers = sorted(f"{p.name.split('_')[0]}.NS" for p in upstox_dir.glob('*_2020-10-01_to_2025-09-30.csv'))
    assert len(tickers) == 50
    for t in tickers:
        silver = clean_bars(src.read(t), t, s.clean)[0]
        gold = compute_features(silver, t, s.features.copy() | {'warmup': 'flag'})
        assert_parity(gold, silver.close, s.features)


def test_conventions_match_independent_definitions(upstox_dir):
    s = settings()
    silver = clean_bars(CsvSource(upstox_dir, '{symbol}_*.csv', {'timestamp': 'date'}).read('RELIANCE.NS'), 'RELIANCE.NS', s.clean)[0]
    gold = compute_features(silver, 'RELIANCE.NS', s.features.copy() | {'warmup': 'flag'})
    c = silver.close.to_numpy()
    np.testing.assert_allclose(gold.sma_20[19:], pd.Series(c).rolling(20).mean()[19:], atol=1e-9)
    np.testing.assert_allclose(gold.rsi_14[14:], wilder_rsi(c)[14:], atol=1e-9)
    # TA-Lib starts both MACD EMAs on the slow one's first bar: the fast EMA is seeded with the mean of the
    # 12 closes ending there (bars 14..25), not of the first 12 closes
    macd = sma_seeded_ema(c, 12, first=26 - 12) - sma_seeded_ema(c, 26)
    signal = sma_seeded_ema(macd, 9)
    np.testing.assert_allclose(gold.macd[33:], macd[33:], atol=1e-9)
    np.testing.assert_allclose(gold.macd_signal[33:], signal[33:], atol=1e-9)
    ret = c[1:] / c[:-1] - 1
    np.testing.assert_allclose(gold.daily_return[1:], ret, atol=1e-12)
    np.testing.assert_allclose(gold.volatility[20:], pd.Series(ret).rolling(20).std(ddof=1)[19:], atol=1e-12)


def test_warmup_rows_are_dropped_or_flagged_never_filled():
    s = settings()
    silver = clean_bars(SyntheticSource().bars('TCS.NS', '2023-01-01', '2023-12-31'), 'TCS.NS', s.clean)[0]
    dropped = compute_features(silver, 'TCS.NS', s.features)
    flagged = compute_features(silver, 'TCS.NS', s.features.copy() | {'warmup': 'flag'})
    names = feature_names(s.features)
    assert len(flagged) == len(silver) and flagged.is_warmup.sum() == 49         # sma_50 is the last to fill
    assert flagged[flagged.is_warmup][names].isna().any(axis=1).all()
    assert flagged.sma_50.isna().sum() == 49 and flagged.macd_signal.isna().sum() == 33
    pd.testing.assert_frame_equal(dropped, flagged[~flagged.is_warmup].reset_index(drop=True))
    assert not dropped[names].isna().any().any()


def test_ten_more_indicators_from_settings_alone():
    extra = 'EMA(timeperiod=9) ATR(timeperiod=14) BBANDS(timeperiod=20) OBV ADX(timeperiod=14) CCI(timeperiod=20) MFI(timeperiod=14) WILLR(timeperiod=14) ROC(timeperiod=10) STOCH'
    s = settings(extra=extra, sma_periods='10 20 50 200', rsi_period='7')
    silver = clean_bars(SyntheticSource().bars('INFY.NS', '2020-01-01', '2023-12-31'), 'INFY.NS', s.clean)[0]
    gold = compute_features(silver, 'INFY.NS', s.features)
    new = ['ema_9', 'atr_14', 'bbands_20_upperband', 'bbands_20_middleband', 'bbands_20_lowerband', 'obv', 'adx_14',
           'cci_20', 'mfi_14', 'willr_14', 'roc_10', 'stoch_slowk', 'stoch_slowd', 'sma_10', 'sma_200', 'rsi_7']
    assert set(new) <= set(gold.columns) and set(feature_names(s.features)) == set(gold.columns) & set(feature_names(s.features))
    h, l, c = (silver[k].to_numpy() for k in ('high', 'low', 'close'))
    ref = talib.ATR(h, l, c, 14)[-len(gold):]
    np.testing.assert_allclose(gold.atr_14, ref, atol=1e-9)
    assert not gold[new].isna().any().any()


def fold_in_chunks(p, f, cuts):
    "The core features of `p` folded on chunk by chunk (cut at `cuts`), the state passed through JSON each time."
    import json
    cols, state = [], None
    for a, b in zip([0, *cuts], [*cuts, len(p)]):
        out, state = indicator_fold(p[a:b], f, state)
        state = json.loads(json.dumps(state))                     # as a state file would keep it
        cols.append(out)
    return {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}


@pytest.mark.parametrize('ticker', ['TCS.NS', 'AAPL', 'USDINR=X'])
def test_folding_new_prices_onto_the_state_equals_a_full_recompute_bit_for_bit(ticker):
    s = settings(sma_periods='20 50 200', rsi_period='7', macd_fast='26', macd_slow='12')   # fast > slow: swapped, as TA-Lib does
    p = SyntheticSource(seed=3, faults=('spike',)).bars(ticker, '2014-01-01', '2024-12-31').close.to_numpy(float).copy()
    full = indicator_fold(p, s.features)[0]
    rng = np.random.default_rng(0)
    for cuts in ([1], [5, 6, 33, 34, 35], [49, 50, 199, 200, 201], sorted(rng.choice(np.arange(1, len(p)), 40, replace=False)), [len(p) - 1]):
        folded = fold_in_chunks(p, s.features, list(cuts))
        for k in full: assert np.array_equal(full[k], folded[k], equal_nan=True), (k, cuts)
    m = talib.MACD(p, 12, 26, 9)[0]
    np.testing.assert_allclose(full['macd'][33:], m[33:], atol=1e-9)


def test_fold_skips_leading_gaps_and_a_gap_inside_stops_the_smoothings_as_in_talib():
    f = settings().features
    p = SyntheticSource().bars('INFY.NS', '2020-01-01', '2021-12-31').close.to_numpy(float).copy()
    p[:7] = np.nan; p[300] = np.nan
    full = indicator_fold(p, f)[0]
    np.testing.assert_allclose(full['rsi_14'][21:300], talib.RSI(p[:300], 14)[21:], atol=1e-9)
    assert np.isnan(full['rsi_14'][300:]).all() and np.isnan(full['macd'][300:]).all()            # TA-Lib: NaN from the gap on
    assert np.isnan(full['sma_20'][300:320]).all() and not np.isnan(full['sma_20'][320:]).any()    # only the windows holding it
    for cuts in ([3], [7, 8], [30, 299, 300, 301], [350]):
        folded = fold_in_chunks(p, f, cuts)
        for k in full: assert np.array_equal(full[k], folded[k], equal_nan=True), (k, cuts)


def test_panel_fold_of_many_tickers_equals_folding_each_alone_bit_for_bit():
    f = settings().features
    src = SyntheticSource(seed=4)
    tickers = ['TCS.NS', 'INFY.NS', 'AAPL', 'SBIN.NS', 'NEWCO.NS', 'TINY.NS']
    series = [src.bars(t, '2015-01-01', '2024-12-31').close.to_numpy(float) for t in tickers[:4]]
    series += [src.bars('NEWCO.NS', '2024-11-01', '2024-12-31').close.to_numpy(float),      # 40 bars: seeded, tail shorter than the window
               src.bars('TINY.NS', '2024-12-10', '2024-12-31').close.to_numpy(float)]       # 16 bars: nothing seeded yet
    k = 3
    states = [indicator_fold(p[:-k], f)[1] for p in series]
    panel, after = panel_fold(np.array([p[-k:] for p in series]), f, states)
    for i, p in enumerate(series):
        full = indicator_fold(p, f)[0]
        alone, z = indicator_fold(p[-k:], f, states[i])
        assert after[i] == z, tickers[i]
        for c in full:
            assert np.array_equal(panel[c][i], alone[c], equal_nan=True) and np.array_equal(panel[c][i], full[c][-k:], equal_nan=True), (tickers[i], c)
