"""Silver rules: each fires on a frame that breaks it, leaves a clean frame untouched, and counts what it did."""
import json, logging
import numpy as np, pandas as pd, polars as pl
import pytest
from stock_nbs.config import load_settings
from stock_nbs.clean import clean_panel, fx_series, CleanError, FLAGS, SILVER_COLUMNS
from stock_nbs.ingest import bronze_rows
from stock_nbs.quality import clean_counts
from stock_nbs.sources import to_bronze, SyntheticSource


def clean_bars(bronze, ticker, rules, fx=None):
    "One ticker through the panel rules as the pipeline runs them: silver (pandas, date order) and the counts the quality report shows."
    b = bronze_rows({ticker: bronze if 'fetched_at' in bronze else to_bronze(bronze, 'test')}, [ticker])
    c = clean_panel(b, rules, fx_series(pl.from_pandas(fx)) if fx is not None else None)
    if c.errors: raise CleanError(c.errors[ticker])
    cc = clean_counts(c.silver, c.rejects)
    counts = json.loads(cc['clean_counts'][0]) if len(cc) else {}
    silver = c.silver.to_pandas().assign(date=lambda d: pd.to_datetime(d.date))
    return silver, {'rows_in': len(b), **counts, 'rows_out': len(silver)}


def bronze(close, **cols):
    n = len(close)
    d = {'date': cols.pop('date', pd.bdate_range('2024-01-01', periods=n)), 'open': close, 'high': [c * 1.01 for c in close],
         'low': [c * 0.99 for c in close], 'close': close, 'adj_close': close, 'volume': [1000.] * n}
    d.update(cols)
    return to_bronze(pd.DataFrame(d), 'test')


def rules(**over):
    return load_settings(None, env={}, overrides={f'clean.{k}': v for k, v in over.items()}).clean


CLOSE = list(100 + np.sin(np.arange(40)) * 2)   # calm, clean prices


def test_a_clean_frame_is_left_untouched():
    b = bronze(CLOSE)
    silver, counts = clean_bars(b, 'TCS.NS', rules())
    assert counts == {'rows_in': 40, 'rows_out': 40}
    pd.testing.assert_frame_equal(silver[['date', 'open', 'high', 'low', 'close', 'adj_close', 'volume']], b[['date', 'open', 'high', 'low', 'close', 'adj_close', 'volume']], check_dtype=False)
    assert not silver[FLAGS].any().any() and list(silver.columns) == SILVER_COLUMNS and (silver.rule_hits == '').all()
    assert (silver.currency == 'INR').all() and (silver.fx_rate == 1.0).all()


@pytest.mark.parametrize('policy,rows,flag', [('drop', 38, None), ('repair', 40, 'flag_repaired'), ('flag', 40, 'flag_invalid')])
def test_nulls(policy, rows, flag):
    c = CLOSE.copy(); c[5] = np.nan
    b = bronze(c); b.loc[9, 'volume'] = np.nan
    silver, counts = clean_bars(b, 'TCS.NS', rules(nulls=policy))
    verb = {'drop': 'dropped', 'repair': 'repaired', 'flag': 'flagged'}[policy]
    assert counts[f'nulls_{verb}'] == 2 and len(silver) == rows
    if flag: assert silver[flag].sum() == 2
    if policy == 'repair': assert silver.close[5] == silver.close[4] and silver.volume[9] == silver.volume[8]


@pytest.mark.parametrize('policy', ['drop', 'flag'])
def test_nonpositive_prices(policy):
    c = CLOSE.copy(); c[3] = 0.0
    b = bronze(c)
    silver, counts = clean_bars(b, 'TCS.NS', rules(nonpositive=policy, ohlc='flag'))
    assert counts[f"nonpositive_{'dropped' if policy == 'drop' else 'flagged'}"] == 1
    assert len(silver) == (39 if policy == 'drop' else 40)


def test_duplicates_keep_the_latest_print():
    b = bronze(CLOSE)
    again = b.iloc[[7]].assign(close=123.0, high=124.0)
    silver, counts = clean_bars(pd.concat([b, again], ignore_index=True), 'TCS.NS', rules())
    assert counts['duplicates_dropped'] == 1 and silver.close[7] == 123.0 and silver.date.is_unique


@pytest.mark.parametrize('policy', ['repair', 'drop', 'flag'])
def test_ohlc_violations(policy):
    b = bronze(CLOSE)
    b.loc[4, ['high', 'low']] = b.loc[4, ['low', 'high']].to_numpy()      # swapped
    b.loc[6, 'high'] = b.loc[6, 'close'] - 1                               # high below close
    silver, counts = clean_bars(b, 'TCS.NS', rules(ohlc=policy))
    assert counts[f"ohlc_{ {'repair': 'repaired', 'drop': 'dropped', 'flag': 'flagged'}[policy]}"] == 2
    if policy == 'repair':
        assert (silver.high >= silver[['open', 'close', 'low']].max(axis=1)).all()
        assert silver.high[4] == b.high[4].max() or silver.high[4] == b.loc[4, ['open', 'high', 'low', 'close']].max()
        assert silver.flag_repaired.sum() == 2


def test_placeholder_bars_dropped_but_fx_exempt():
    b = bronze(CLOSE)
    b.loc[10, ['open', 'high', 'low', 'close', 'adj_close']] = b.close[9]
    b.loc[10, 'volume'] = 0
    b.loc[20, 'volume'] = 0                                                # a real bar with no trades: flagged only
    silver, counts = clean_bars(b, 'TCS.NS', rules())
    assert counts['placeholder_dropped'] == 1 and counts['zero_volume_flagged'] == 1
    assert b.date[10] not in set(silver.date) and silver.flag_zero_volume.sum() == 1
    fx = bronze(CLOSE, volume=[0.] * 40)
    fx.loc[10, ['open', 'high', 'low', 'close', 'adj_close']] = 83.0
    silver, counts = clean_bars(fx, 'USDINR=X', rules())
    assert len(silver) == 40 and 'placeholder_dropped' not in counts and 'zero_volume_flagged' not in counts


def test_100x_unit_error_is_rescaled():
    b = bronze(CLOSE)
    b.loc[15, ['open', 'high', 'low', 'close', 'adj_close']] *= 100
    silver, counts = clean_bars(b, 'TCS.NS', rules())
    assert counts['spikes_repaired'] == 1 and np.isclose(silver.close[15], CLOSE[15]) and silver.flag_repaired[15]
    assert 'outliers_flagged' not in counts                                # repaired before the outlier rule looks


def test_outliers_flagged_by_each_rule():
    rng = np.random.default_rng(1)
    c = list(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 250))))
    c[120:] = [x * 0.75 for x in c[120:]]                                  # one -25% day
    b = bronze(c)
    for rule in ('mad', 'iqr', 'zscore'):
        silver, counts = clean_bars(b, 'TCS.NS', rules(outlier_rules=rule))
        assert counts['outliers_flagged'] >= 1 and silver.flag_outlier[120], rule
    silver, counts = clean_bars(b, 'TCS.NS', rules(outliers='drop'))
    assert counts['outliers_dropped'] == 1 and len(silver) == 249


def fx_bars(dates, rates):
    return to_bronze(pd.DataFrame({'date': pd.to_datetime(dates), 'open': rates, 'high': rates, 'low': rates, 'close': rates,
                                   'adj_close': rates, 'volume': 0.}), 'test')


def test_usd_to_inr_with_a_us_holiday_and_a_stale_rate(caplog):
    # US sessions around Independence Day 2024 (no 4 July bar) and an FX series missing 5 July
    us = bronze([200., 201., 202., 203.], date=pd.to_datetime(['2024-07-02', '2024-07-03', '2024-07-05', '2024-07-08']))
    fx = fx_bars(['2024-07-01', '2024-07-02', '2024-07-03', '2024-07-04', '2024-07-08'], [83.4, 83.5, 83.6, 83.55, 83.5])
    fx_silver, _ = clean_bars(fx, 'USDINR=X', rules())
    fx_silver['date'] = fx_silver.date.dt.date
    silver, counts = clean_bars(us, 'AAPL', rules(fx_max_staleness_days=1), fx=fx_silver)
    assert silver.date.tolist() == list(us.date)                           # no row invented for 4 July
    assert silver.fx_rate.tolist() == [83.5, 83.6, 83.55, 83.5]            # 5 July uses 4 July's rate (1 day old)
    assert silver.flag_stale_fx.tolist() == [False, False, True, False]
    assert np.allclose(silver.close / silver.fx_rate, us.close) and (silver.currency == 'USD').all()
    with caplog.at_level(logging.WARNING, logger='stock_nbs'):
        silver, counts = clean_bars(us, 'AAPL', rules(fx_max_staleness_days=0), fx=fx_silver)
    assert counts['fx_stale_dropped'] == 1 and len(silver) == 3
    assert '1 bars rejected: no USDINR=X rate within 0 days (first: 2024-07-05)' in caplog.text


def test_no_fx_series_is_a_clear_error():
    with pytest.raises(CleanError, match='no USDINR=X rates to convert USD prices to INR; ingest USDINR=X'):
        clean_bars(bronze(CLOSE), 'AAPL', rules())
    c = clean_panel(pl.concat([bronze_rows({'AAPL': bronze(CLOSE)}, ['AAPL']), bronze_rows({'TCS.NS': bronze(CLOSE)}, ['TCS.NS'])]), rules())
    assert list(c.errors) == ['AAPL'] and c.silver['ticker'].unique().to_list() == ['TCS.NS']   # the other ticker goes on


def test_counts_add_up_on_a_faulty_synthetic_market():
    src = SyntheticSource(faults=('ohlc', 'nan', 'duplicate', 'placeholder', 'spike', 'missing'), fault_rate=0.02)
    truth = SyntheticSource().bars('SBIN.NS', '2021-01-01', '2023-12-31').set_index('date')
    silver, counts = clean_bars(src.bars('SBIN.NS', '2021-01-01', '2023-12-31'), 'SBIN.NS', rules())
    dropped = sum(v for k, v in counts.items() if k.endswith('_dropped'))
    assert counts['rows_out'] == counts['rows_in'] - dropped == len(silver)
    assert all(counts.get(k, 0) > 5 for k in ('duplicates_dropped', 'nulls_dropped', 'placeholder_dropped', 'spikes_repaired', 'ohlc_repaired'))
    s = silver.set_index('date')
    assert np.allclose(s.close, truth.close[s.index])                      # every surviving close is the true one


def test_many_tickers_at_once_equal_one_at_a_time():
    src = SyntheticSource(faults=('ohlc', 'nan', 'duplicate', 'placeholder', 'spike', 'missing'), fault_rate=0.02)
    names = ['SBIN.NS', 'TCS.NS', 'INFY.NS']
    bars = {t: to_bronze(src.bars(t, '2021-01-01', '2023-12-31'), 'test') for t in names}
    panel = clean_panel(bronze_rows(bars, names), rules()).silver.to_pandas()
    for t in names:
        one = clean_bars(bars[t], t, rules())[0]
        pd.testing.assert_frame_equal(panel[panel.ticker == t].reset_index(drop=True).assign(date=lambda d: pd.to_datetime(d.date)), one, check_dtype=False)


@pytest.mark.parametrize('rule', ['mad', 'iqr', 'zscore'])
def test_outlier_flags_are_point_in_time_later_bars_never_change_them(rule):
    b = SyntheticSource(seed=5, faults=('ohlc', 'nan', 'duplicate', 'placeholder', 'spike', 'missing'), fault_rate=0.02).bars('SBIN.NS', '2016-01-01', '2024-12-31')
    r = rules(outlier_rules=rule, outlier_mad='2.5', outlier_iqr='1', outlier_zscore='2.5')       # low thresholds: many flags to compare
    full = clean_bars(b, 'SBIN.NS', r)[0].set_index('date')
    assert full.flag_outlier.sum() > 20
    for cut in (300, 301, 1000, 1777, len(b) - 5):
        head = clean_bars(b.iloc[:cut], 'SBIN.NS', r)[0].set_index('date')
        settled = head.index[:-3]                                             # the spike rule looks 2 bars ahead
        pd.testing.assert_series_equal(head.flag_outlier[settled], full.flag_outlier[settled], check_names=False)


def test_a_crash_in_a_calm_year_is_flagged_even_when_a_wild_year_follows():
    rng = np.random.default_rng(2)
    lr = np.r_[rng.normal(0, 0.01, 250), rng.normal(0, 0.06, 250)]
    lr[100] = np.log(0.86)                                                  # -14% in the calm year
    c = list(100 * np.exp(np.cumsum(lr)))
    silver, counts = clean_bars(bronze(c), 'TCS.NS', rules())
    assert silver.flag_outlier[100] and counts['outliers_flagged'] >= 1
    mad = 1.4826 * np.median(np.abs(lr[1:] - np.median(lr[1:])))
    assert abs(lr[100] - np.median(lr[1:])) < 10 * mad                      # the whole-history rule would have let it pass


def test_returns_of_the_first_month_with_fewer_than_20_earlier_returns_are_not_judged():
    c = [100.] * 5 + [50.] + [50.] * 60                                     # a halving on day 6: nothing to judge it against yet
    silver, counts = clean_bars(bronze(c), 'TCS.NS', rules())
    assert not silver.flag_outlier.any() and 'outliers_flagged' not in counts
