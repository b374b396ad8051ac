"""Worker processes change nothing but speed: the same bronze, silver, gold, quality and dataset as in-process; failures stay per ticker."""
import numpy as np, pandas as pd
import pyarrow.parquet as pq
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from stock_nbs.store import Store
from stock_nbs.workers import TickerPool

TICKERS = ' '.join([f'W{i:02d}.NS' for i in range(36)] + ['AAPL', 'MSFT', 'USDINR=X'])


def cfg(root, workers):
    return load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'source.kind': 'synthetic', 'source.start': '2022-01-01',
                                                  'source.synthetic_faults': 'ohlc nan spike placeholder duplicate', 'quality.min_rows': '100',
                                                  'run.workers': str(workers), 'storage.data_dir': str(root)})


def test_pool_runs_in_processes_and_keeps_order():
    with TickerPool(2, 200) as pool:
        assert pool.pool is not None  # pytest's main process is single-threaded: workers are forked
        assert list(pool.imap(abs, list(range(-100, 100)))) == [abs(x) for x in range(-100, 100)]


def test_processes_and_in_process_write_the_same(tmp_path):
    out = {}
    for w in (1, 2):
        s = cfg(tmp_path/f'w{w}', w)
        rep = ingest(s, run_date='2024-06-28', progress=False)
        res = transform(s, progress=False, today='2024-06-28')
        assert (rep.status == 'updated').all() and (res.tickers.status == 'ok').all()
        out[w] = (rep, res.tickers, res.quality, pq.read_table(res.dataset).to_pandas(), res.summary)
    for a, b in zip(out[1][:4], out[2][:4]): pd.testing.assert_frame_equal(a, b)
    assert out[1][4] == out[2][4]
    st1, st2 = Store(tmp_path/'w1'), Store(tmp_path/'w2')
    for t in ('W07.NS', 'AAPL'):
        for layer in ('silver', 'gold'): pd.testing.assert_frame_equal(st1.read(layer, '1d', t), st2.read(layer, '1d', t))


def test_a_broken_ticker_fails_alone_in_the_workers(tmp_path):
    s = cfg(tmp_path/'d', 2)
    ingest(s, run_date='2024-06-28', progress=False)
    Store(s.data_dir).path('bronze', '1d', 'W05.NS').write_bytes(b'not parquet')
    rep = ingest(s, run_date='2024-07-05', progress=False)
    assert rep.set_index('ticker').status['W05.NS'] == 'failed' and 'W05.NS.parquet is unreadable' in rep.set_index('ticker').error['W05.NS']
    assert (rep[rep.ticker != 'W05.NS'].status == 'updated').all()
    res = transform(s, progress=False, today='2024-07-05')
    t = res.tickers.set_index('ticker')
    assert t.status['W05.NS'] == 'failed' and 'unreadable' in t.error['W05.NS'] and (t.drop('W05.NS').status == 'ok').all()
    ds = pq.read_table(res.dataset, columns=['ticker', 'date']).to_pandas()
    assert 'W05.NS' not in set(ds.ticker) and ds.date.max() == pd.Timestamp('2024-07-05')
