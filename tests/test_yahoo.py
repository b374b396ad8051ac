"""Yahoo source, driven through yfinance's real `download` with only the per-ticker HTTP layer stubbed."""
import socket
import numpy as np, pandas as pd
import pytest
import yfinance, yfinance.multi
from yfinance.exceptions import YFRateLimitError
from stock_nbs.sources import YahooSource, SourceError, BRONZE_COLUMNS, check_lookback


class StubTicker:
    """Stands in for yfinance.Ticker inside yf.download: `history` returns what Yahoo's chart API gives after
    yfinance's own parsing (Open, High, Low, Close, Adj Close, Volume; index Date/Datetime in the exchange tz)."""
    script = {}    # ticker -> list of behaviours, consumed one per call: 'ok', 'empty', 'ratelimit', 'error'
    calls = []

    def __init__(self, ticker):
        self.ticker = ticker
        self._price_history = type('PH', (), {'_last_error': None})()

    def history(self, start=None, end=None, interval='1d', **kw):
        StubTicker.calls.append((self.ticker, start, end, interval, kw.get('auto_adjust')))
        todo = StubTicker.script.get(self.ticker, ['ok'])
        what = todo.pop(0) if len(todo) > 1 else todo[0]
        if what == 'ratelimit': raise YFRateLimitError()
        if what == 'error': raise ConnectionError('Failed to perform, curl: (6) Could not resolve host: query2.finance.yahoo.com')
        tz = 'America/New_York' if '.' not in self.ticker else 'Asia/Kolkata'
        if interval == '1d':
            idx = pd.DatetimeIndex(pd.bdate_range(start, pd.Timestamp(end) - pd.Timedelta(days=1)), name='Date').tz_localize(tz)
        else:
            idx = pd.date_range(pd.Timestamp(start).tz_localize(tz) + pd.Timedelta(hours=9, minutes=15), periods=6, freq='5min', name='Datetime')
        if what == 'empty':
            self._price_history._last_error = f'{self.ticker}: possibly delisted; no price data found'
            return yfinance.utils.empty_df()
        n = len(idx)
        base = 100 + np.arange(n, dtype=float)
        return pd.DataFrame({'Open': base, 'High': base + 2, 'Low': base - 1, 'Close': base + 1, 'Adj Close': base + 0.5,
                             'Volume': np.arange(n, dtype=np.int64) * 10 + 1000}, index=idx)


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(yfinance.multi, 'Ticker', StubTicker)
    StubTicker.script, StubTicker.calls = {}, []
    return StubTicker


def source(**kw):
    sleeps = []
    return YahooSource(sleep=sleeps.append, **kw), sleeps


def test_batched_download_keeps_close_and_adj_close(stub):
    src, _ = source(batch_size=2)
    res = src.fetch(['TCS.NS', 'INFY.NS', 'AAPL'], '2024-01-01', '2024-01-05')
    assert not res.failed and sorted(res.bars) == ['AAPL', 'INFY.NS', 'TCS.NS']
    df = res.bars['TCS.NS']
    assert list(df.columns) == BRONZE_COLUMNS and len(df) == 5           # end is inclusive (yfinance's is exclusive)
    assert df.date.tolist() == list(pd.bdate_range('2024-01-01', '2024-01-05')) and df.date.dt.tz is None
    assert df.close.tolist() == [101, 102, 103, 104, 105] and df.adj_close.tolist() == [100.5, 101.5, 102.5, 103.5, 104.5]
    assert all(c[4] is False for c in stub.calls)                       # auto_adjust=False on every call
    assert {c[2] for c in stub.calls} == {'2024-01-06'}


def test_empty_ticker_retried_alone_then_reported(stub):
    stub.script = {'GONE.NS': ['empty']}
    src, _ = source()
    res = src.fetch(['TCS.NS', 'GONE.NS'], '2024-01-01', '2024-01-05')
    assert list(res.bars) == ['TCS.NS']
    assert [c[0] for c in stub.calls].count('GONE.NS') == 2             # once in the batch, once alone
    assert res.failed['GONE.NS'].startswith('GONE.NS: Yahoo returned no bars for 2024-01-01..2024-01-05')
    assert 'possibly delisted' in res.failed['GONE.NS']


def test_rate_limit_waits_longer_then_succeeds(stub):
    stub.script = {'TCS.NS': ['ratelimit', 'ratelimit', 'ok']}
    src, sleeps = source(retries=3, backoff=2, rate_limit_wait=60)
    res = src.fetch(['TCS.NS'], '2024-01-01', '2024-01-05')
    assert not res.failed and len(res.bars['TCS.NS']) == 5
    assert sleeps == [60, 60]


def test_network_failure_backs_off_exponentially_then_fails_with_reason(stub):
    stub.script = {'TCS.NS': ['error']}
    src, sleeps = source(retries=2, backoff=1.5)
    res = src.fetch(['TCS.NS'], '2024-01-01', '2024-01-05')
    assert sleeps == [1.5, 3.0]                                         # backoff doubles; no second round alone
    assert 'failed after 2 retries' in res.failed['TCS.NS'] and 'Could not resolve host' in res.failed['TCS.NS']


def test_exception_from_download_itself_is_retried(stub):
    calls = []
    def flaky(tickers, **kw):
        calls.append(1)
        if len(calls) < 3: raise OSError('connection reset')
        return yfinance.download(tickers, **kw)
    src, sleeps = source(retries=3, backoff=1, download=flaky)
    res = src.fetch(['TCS.NS'], '2024-01-01', '2024-01-05')
    assert sleeps == [1, 2] and len(res.bars['TCS.NS']) == 5


def test_one_failing_ticker_does_not_take_the_batch_down(stub):
    stub.script = {'BAD.NS': ['error']}
    src, _ = source(retries=1, backoff=0)
    res = src.fetch(['TCS.NS', 'BAD.NS', 'INFY.NS'], '2024-01-01', '2024-01-05')
    assert sorted(res.bars) == ['INFY.NS', 'TCS.NS'] and list(res.failed) == ['BAD.NS']


def test_intraday_bars_are_tz_aware_in_exchange_time(stub):
    src, _ = source()
    start = (pd.Timestamp.now() - pd.Timedelta(days=3)).normalize()
    res = src.fetch(['TCS.NS'], start, start + pd.Timedelta(days=1), '5m')
    d = res.bars['TCS.NS'].date
    assert str(d.dt.tz) == 'Asia/Kolkata' and d.iloc[0].hour == 9 and d.iloc[0].minute == 15


def test_intraday_lookback_is_refused_before_any_request(stub):
    src, _ = source()
    with pytest.raises(SourceError, match='Yahoo keeps 5m bars for the last 60 days only'):
        src.fetch(['TCS.NS'], '2020-01-01', '2020-01-05', '5m')
    assert stub.calls == []
    check_lookback('1h', pd.Timestamp.now() - pd.Timedelta(days=700))
    with pytest.raises(SourceError, match='1h bars for the last 730 days'):
        check_lookback('1h', pd.Timestamp.now() - pd.Timedelta(days=800))


def _online():
    try:
        socket.create_connection(('query1.finance.yahoo.com', 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.live
@pytest.mark.skipif(not _online(), reason='offline: Yahoo Finance cannot be reached')
def test_live_yahoo_download():
    res = YahooSource(retries=1).fetch(['RELIANCE.NS', 'AAPL'], pd.Timestamp.now() - pd.Timedelta(days=20), pd.Timestamp.now())
    assert not res.failed and all(len(df) > 5 for df in res.bars.values())
