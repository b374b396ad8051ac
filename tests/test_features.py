"""Gold features: TA-Lib parity (synthetic and real Upstox data), the conventions behind it, extras from settings, warm-up, resuming from kept state."""
import numpy as np, pandas as pd, polars as pl
import pytest
import talib
from stock_nbs.config import load_settings
from stock_nbs.features import gold_panel, feature_names, core_names, STATE_COLUMNS
from stock_nbs.sources import SyntheticSource, CsvSource
from test_clean import clean_bars


def compute_features(silver, ticker, f, anchors=None):
    "Gold rows of one ticker's silver (pandas in, pandas out) through the panel code."
    s = pl.from_pandas(silver).with_columns(ticker=pl.lit(ticker), date=pl.col('date').cast(pl.Date)).with_columns(year=pl.col('date').dt.year().cast(pl.Int32))
    return gold_panel(s, f, anchors).to_pandas()


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


def resumed(silver, ticker, f, cut, context=60):
    "Gold of the rows from `cut` on, resumed from the state of the gold row before `cut` and `context` silver rows before it."
    full = compute_features(silver, ticker, f | {'warmup': 'flag'})
    anchor = pl.from_pandas(full.iloc[[cut - 1]][['ticker', 'date', 'macd_signal', *STATE_COLUMNS]]).with_columns(pl.col('date').cast(pl.Date))
    return full.iloc[cut:].reset_index(drop=True), compute_features(silver.iloc[cut - 1 - context:].reset_index(drop=True), ticker, f | {'warmup': 'flag'}, anchor)


@pytest.mark.parametrize('ticker', ['TCS.NS', 'AAPL', 'USDINR=X'])
def test_resuming_from_the_kept_state_equals_a_full_recompute(ticker):
    s = settings(sma_periods='20 50 200', rsi_period='7', macd_fast='26', macd_slow='12')   # fast > slow: swapped, as TA-Lib does
    b = SyntheticSource(seed=3, faults=('spike',)).bars(ticker, '2014-01-01', '2024-12-31')
    silver = clean_bars(b, ticker, s.clean, fx=SyntheticSource(seed=3).bars('USDINR=X', '2014-01-01', '2024-12-31'))[0]
    for cut in (240, 241, 1000, len(silver) - 1):
        full, part = resumed(silver, ticker, s.features, cut, context=210)
        assert part.date.tolist() == full.date.tolist()
        for k in core_names(s.features) + STATE_COLUMNS: np.testing.assert_allclose(part[k], full[k], rtol=1e-9, atol=1e-12, err_msg=f'{k} {cut}')
        assert not part.is_warmup.any()
    m = talib.MACD(silver.close.to_numpy(float), 12, 26, 9)[0]
    np.testing.assert_allclose(compute_features(silver, ticker, s.features | {'warmup': 'flag'}).macd[33:], m[33:], atol=1e-9)


def test_leading_gaps_are_skipped_and_a_gap_inside_stops_the_smoothings_as_in_talib():
    f = settings().features | {'warmup': 'flag'}
    b = SyntheticSource().bars('INFY.NS', '2020-01-01', '2021-12-31')
    p = b.close.to_numpy(float).copy(); p[:7] = np.nan; p[300] = np.nan
    silver = b.assign(close=p, ticker='INFY.NS')
    full = compute_features(silver, 'INFY.NS', f)
    np.testing.assert_allclose(full['rsi_14'][21:300], talib.RSI(p[:300], 14)[21:], atol=1e-9)
    assert full['rsi_14'][300:].isna().all() and full['macd'][300:].isna().all()                  # TA-Lib: NaN from the gap on
    assert full['sma_20'][300:320].isna().all() and not full['sma_20'][320:].isna().any()         # only the windows holding it


def test_many_tickers_at_once_equal_each_alone():
    f = settings().features
    src = SyntheticSource(seed=4)
    spans = {'TCS.NS': ('2015-01-01', '2024-12-31'), 'INFY.NS': ('2015-01-01', '2024-12-31'), 'NEWCO.NS': ('2024-10-01', '2024-12-31'),
             'TINY.NS': ('2024-12-10', '2024-12-31')}                                              # 16 bars: all warm-up
    silver = {t: clean_bars(src.bars(t, *span), t, settings().clean)[0] for t, span in spans.items()}
    panel = gold_panel(pl.concat([pl.from_pandas(x).with_columns(pl.col('date').cast(pl.Date)) for x in silver.values()]), f).to_pandas()
    for t, x in silver.items():
        alone = compute_features(x, t, f)
        pd.testing.assert_frame_equal(panel[panel.ticker == t].reset_index(drop=True), alone)
    assert 'TINY.NS' not in set(panel.ticker)
