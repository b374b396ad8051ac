"""Synthetic source: determinism per (ticker, date), realism, faults, regime change."""
import subprocess, sys
import numpy as np, pandas as pd
import pytest
from stock_nbs.config import FAULTS
from stock_nbs.sources import SyntheticSource, SourceError, VALUE_COLUMNS, BRONZE_COLUMNS

TICKERS = ['RELIANCE.NS', 'TCS.NS', 'AAPL', 'NVDA', 'USDINR=X']


def values(res):
    return pd.concat({t: df.set_index('date')[VALUE_COLUMNS] for t, df in res.bars.items()}, names=['ticker'])


@pytest.mark.parametrize('faults', [(), FAULTS])
def test_two_ranges_agree_on_every_common_ticker_and_date(faults):
    src = SyntheticSource(seed=7, faults=faults, fault_rate=0.03)
    a = values(src.fetch(TICKERS, '2019-01-01', '2021-06-30'))
    b = values(src.fetch(TICKERS[::-1], '2020-03-01', '2023-01-31'))
    a, b = a[~a.index.duplicated()], b[~b.index.duplicated()]
    common = a.index.intersection(b.index)
    assert len(common) > 5 * 300
    pd.testing.assert_frame_equal(a.loc[common], b.loc[common])


def test_same_bars_in_another_process():
    code = ("from stock_nbs.sources import SyntheticSource;"
            "print(SyntheticSource(seed=3).bars('INFY.NS','2024-01-01','2024-01-31').close.sum())")
    runs = {subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env={'PYTHONHASHSEED': str(i)}).stdout for i in (1, 2)}
    assert len(runs) == 1 and float(runs.pop()) > 0


def test_realistic_bars():
    res = SyntheticSource().fetch(TICKERS, '2015-01-01', '2024-12-31')
    for t, df in res.bars.items():
        assert list(df.columns) == BRONZE_COLUMNS and df.source.eq('synthetic').all()
        assert df.date.is_monotonic_increasing and df.date.dt.day_of_week.le(4).all()
        assert (df.high >= df[['open', 'close']].max(axis=1)).all() and (df.low <= df[['open', 'close']].min(axis=1)).all()
        assert (df[['open', 'high', 'low', 'close', 'adj_close']] > 0).all().all()
        r = np.log(df.close).diff().dropna()
        annual_vol = r.std() * np.sqrt(252)
        if t == 'USDINR=X':
            assert df.volume.eq(0).all() and 0.02 < annual_vol < 0.15 and 30 < df.close.iloc[-1] < 150
        else:
            assert (df.volume > 0).all() and 0.1 < annual_vol < 0.8
            assert np.corrcoef(np.abs(r), np.log(df.volume.iloc[1:]))[0, 1] > 0   # volume rises with the move
    assert 10 < res.bars['AAPL'].close.iloc[0] < 1000                           # USD-like levels
    assert (res.bars['TCS.NS'].close * 20).round(6).mod(1).eq(0).all()          # NSE tick of 0.05


@pytest.mark.parametrize('fault', FAULTS)
def test_each_fault_is_injected_alone(fault):
    clean = SyntheticSource(seed=5).bars('SBIN.NS', '2022-01-01', '2023-12-31')
    bad = SyntheticSource(seed=5, faults=(fault,), fault_rate=0.05).bars('SBIN.NS', '2022-01-01', '2023-12-31')
    c = clean.set_index('date')
    hits = {'ohlc': (bad.high < bad.low).sum(),
            'nan': bad.close.isna().sum(),
            'duplicate': bad.date.duplicated().sum(),
            'placeholder': ((bad.volume == 0) & (bad.open == bad.high) & (bad.low == bad.close)).sum(),
            'spike': (bad.close.to_numpy() / bad.date.map(c.close).to_numpy() > 50).sum(),
            'missing': len(clean) - bad.date.nunique()}
    assert 5 <= hits[fault] <= 60, hits
    assert all(v == 0 for k, v in hits.items() if k != fault), hits


def test_regime_change_doubles_volatility_from_its_date():
    src = SyntheticSource(seed=11, regime_start='2022-01-01', regime_vol=2.0)
    ratios = []
    for t in ['A.NS', 'B.NS', 'C.NS', 'D.NS']:
        r = np.log(src.bars(t, '2019-01-01', '2024-12-31').set_index('date').close).diff()
        ratios.append(r['2022':].std() / r[:'2021'].std())
    assert 1.7 < np.mean(ratios) < 2.3
    before = SyntheticSource(seed=11).bars('A.NS', '2019-01-01', '2021-12-31')
    pd.testing.assert_frame_equal(before, src.bars('A.NS', '2019-01-01', '2021-12-31'))   # unchanged before the date


def test_limits_are_clear():
    with pytest.raises(SourceError, match='synthetic data starts 2000-01-03; asked from 1995-01-01'):
        SyntheticSource().bars('TCS.NS', '1995-01-01', '2000-12-31')



def test_intraday_bars_are_deterministic_per_day_and_end_at_the_daily_close():
    src = SyntheticSource(seed=4)
    a = src.fetch(['INFY.NS', 'MSFT'], '2024-03-04', '2024-03-08', '5m').bars
    b = src.fetch(['INFY.NS', 'MSFT'], '2024-03-06', '2024-03-12', '5m').bars
    for t in a:
        x, y = a[t].set_index('date')[VALUE_COLUMNS], b[t].set_index('date')[VALUE_COLUMNS]
        common = x.index.intersection(y.index)
        assert len(common) == 3 * (75 if t == 'INFY.NS' else 78)
        pd.testing.assert_frame_equal(x.loc[common], y.loc[common])
    daily = src.bars('MSFT', '2024-03-04', '2024-03-08').set_index('date').close
    last = a['MSFT'].groupby(a['MSFT'].date.dt.date).close.last()
    assert np.allclose(last.to_numpy(), daily.to_numpy(), atol=0.011)
    assert str(a['MSFT'].date.dt.tz) == 'America/New_York' and a['MSFT'].date.iloc[0].strftime('%H:%M') == '09:30'
