"""Store: tables, unreadable and old-layout roots, unwritable roots, the lock between two processes, kill -9 at any point."""
import subprocess, sys, time, textwrap
import numpy as np, pandas as pd, polars as pl
import pytest
from stock_nbs.store import Store, StoreError, migrate_store, load_features, LAYERS
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from conftest import CLI


def test_layout_one_delta_table_per_layer_and_interval(tmp_path):
    cfg = load_settings(None, env={}, overrides={'storage.data_dir': str(tmp_path), 'source.kind': 'synthetic', 'universe.tickers': 'TCS.NS M&M.NS AAPL USDINR=X',
                                                  'source.start': '2024-01-01', 'quality.min_rows': '10'})
    ingest(cfg, run_date='2024-03-28', progress=False)
    transform(cfg, progress=False, today='2024-03-28')
    ingest(cfg, run_date='2024-03-28', interval='15m', progress=False)
    tables = sorted(str(p.parent.relative_to(tmp_path)) for p in tmp_path.rglob('_delta_log'))
    assert tables == ['bronze/15m', 'bronze/1d', 'gold/1d', 'quality/1d', 'silver/1d']   # no rule dropped a bar: no rejects table yet
    assert {p.name for p in (tmp_path/'gold'/'1d').iterdir() if p.is_dir()} == {'_delta_log', 'year=2024'}
    st = Store(tmp_path)
    assert st.tickers('gold', '1d') == ['AAPL', 'M&M.NS', 'TCS.NS', 'USDINR=X'] and st.tickers('bronze', '15m') == ['AAPL', 'M&M.NS', 'TCS.NS', 'USDINR=X']
    with pytest.raises(StoreError, match="unknown table 'platinum'"):
        st.path('platinum', '1d')


def test_an_unreadable_table_names_itself_and_the_repair(tmp_path):
    cfg = load_settings(None, env={}, overrides={'storage.data_dir': str(tmp_path), 'source.kind': 'synthetic', 'universe.tickers': 'TCS.NS',
                                                  'source.start': '2024-01-01', 'quality.min_rows': '10'})
    ingest(cfg, run_date='2024-03-28', progress=False)
    transform(cfg, progress=False, today='2024-03-28')
    for f in (tmp_path/'gold'/'1d').rglob('*.parquet'): f.write_bytes(b'PAR1 garbage')
    with pytest.raises(StoreError, match=r"table .*gold/1d is unreadable .*stock-nbs transform --full"):
        load_features(settings=cfg)
    transform(cfg, progress=False, today='2024-03-28', full=True)        # the repair the message names
    assert len(load_features(settings=cfg)) > 10


def test_an_old_layout_root_is_named_and_converted_once(tmp_path):
    "Per-ticker bronze files and a part laid over them (the layout before the tables) become one bronze table with the same bars."
    import json, pyarrow as pa, pyarrow.parquet as pq
    folder = tmp_path/'bronze'/'1d'; (folder/'_parts').mkdir(parents=True)
    bars = lambda days, c: pd.DataFrame({'date': pd.to_datetime(days), **{k: c for k in ('open', 'high', 'low', 'close', 'adj_close')}, 'volume': 100.,
                                          'source': 'synthetic', 'fetched_at': pd.Timestamp('2024-01-20', tz='UTC')})
    tcs = bars(pd.bdate_range('2024-01-01', periods=10), 10.)
    pq.write_table(pa.Table.from_pandas(tcs, preserve_index=False), folder/'TCS.NS.parquet')
    part = pd.concat([bars(pd.bdate_range('2024-01-11', periods=3), 11.).assign(ticker='TCS.NS'), bars(pd.bdate_range('2024-01-01', periods=2), 5.).assign(ticker='INFY.NS')])
    t = pa.Table.from_pandas(part, preserve_index=False)
    pq.write_table(t.replace_schema_metadata({b'stock_nbs': json.dumps({'since': {'TCS.NS': '2024-01-11', 'INFY.NS': '2024-01-01'}}).encode()}), folder/'_parts'/'5.parquet')
    cfg = load_settings(None, env={}, overrides={'storage.data_dir': str(tmp_path), 'universe.tickers': 'TCS.NS INFY.NS', 'quality.min_rows': '1'})
    with pytest.raises(StoreError, match='old per-ticker Parquet layout; convert the data root once with `stock-nbs migrate-store`'):
        ingest(cfg, run_date='2024-03-28', source='synthetic', progress=False)
    assert migrate_store(tmp_path) == {'1d': 13}                        # 8 file rows kept, 3 laid over from the part, 2 only in it
    got = Store(tmp_path).read('bronze', '1d').sort('ticker', 'date')
    assert got.filter(pl.col('ticker') == 'TCS.NS')['close'].to_list() == [10.] * 8 + [11.] * 3
    assert got.filter(pl.col('ticker') == 'INFY.NS')['close'].to_list() == [5., 5.]
    assert len(list(tmp_path.glob('old-layout-*/bronze/1d/TCS.NS.parquet'))) == 1      # moved aside, not deleted
    with pytest.raises(StoreError, match='holds no bronze files of the old layout'):
        migrate_store(tmp_path)


def test_unwritable_data_root_fails_before_fetching(tmp_path):
    blocker = tmp_path/'a-file'; blocker.write_text('x')
    cfg = load_settings(None, env={}, overrides={'storage.data_dir': str(blocker/'data'), 'source.kind': 'synthetic', 'universe.tickers': 'TCS.NS'})
    with pytest.raises(StoreError, match=r'data root .*a-file/data is not writable.*STOCK_NBS__STORAGE__DATA_DIR'):
        ingest(cfg, run_date='2024-01-05', progress=False)
    assert not (tmp_path/'data').exists()


HOLD = textwrap.dedent("""
    import sys, time
    from stock_nbs.store import Store
    with Store(sys.argv[1]).lock():
        print('locked', flush=True)
        time.sleep(float(sys.argv[2]))
""")


def test_a_second_run_refuses_while_the_first_holds_the_lock(tmp_path):
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(tmp_path), '30'], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'locked'
        with pytest.raises(StoreError) as e:
            with Store(tmp_path).lock(timeout=0): pass
        assert f'data root {tmp_path} is in use by pid {p.pid}' in str(e.value) and 'lock_timeout_seconds' in str(e.value)
    finally:
        p.kill(); p.wait()
    with Store(tmp_path).lock(timeout=0): pass                         # the OS released it with the process


def test_a_second_run_waits_when_asked_to(tmp_path):
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(tmp_path), '1.5'], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'locked'
    t0 = time.monotonic()
    with Store(tmp_path).lock(timeout=60):
        waited = time.monotonic() - t0
    p.wait()
    assert waited > 1.0                                                 # we got in only once the holder let go


def test_two_ingests_started_at_once_do_not_interleave(tmp_path):
    ini = tmp_path/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS AAPL USDINR=X\n[source]\nkind = synthetic\nstart = 2005-01-01\n"
                   "[storage]\ndata_dir = data\nlock_timeout_seconds = 120\n")
    cmd = [*CLI, 'ingest', '--settings', str(ini), '--date', '2024-06-28', '--no-progress']
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert [o[0] for o in outs] == [0, 0], outs
    events = [l.split(' by pid ') for l in (tmp_path/'data'/'logs'/'pipeline.log').read_text().splitlines() if ' by pid ' in l]
    kinds = [e[0].split()[-1] for e in events]
    pids = [e[1] for e in events]
    assert kinds == ['acquired', 'released', 'acquired', 'released']   # one run's whole ingest, then the other's
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[0] != pids[2]
    assert sorted(o[1].split(':')[1].strip().split(',')[1] for o in outs) == [" 0 updated", " 4 updated"]
    assert not Store(tmp_path/'data').read('bronze', '1d')[['ticker', 'date', 'seq']].is_duplicated().any()


BUILD = textwrap.dedent("""
    import sys
    from stock_nbs.config import load_settings
    from stock_nbs.ingest import ingest
    from stock_nbs.pipeline import transform
    cfg = load_settings(sys.argv[1], env={})
    for day in sys.argv[2:]:
        ingest(cfg, run_date=day, progress=False)
        transform(cfg, progress=False, today=day)
""")


def _settings(root):
    ini = root/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS SBIN.NS AAPL USDINR=X\n[source]\nkind = synthetic\nstart = 2021-01-01\n"
                   "synthetic_faults = ohlc spike duplicate placeholder nan\n[quality]\nmin_rows = 10\n[storage]\ndata_dir = data\n")
    return ini


def test_kill_9_at_any_point_leaves_readable_tables_and_a_rerun_reaches_the_reference(tmp_path):
    days = ['2024-06-26', '2024-06-27', '2024-06-28']
    ref = tmp_path/'ref'; ref.mkdir()
    t0 = time.monotonic()
    subprocess.run([sys.executable, '-c', BUILD, str(_settings(ref)), *days], check=True)
    took = time.monotonic() - t0
    want = load_features(settings=load_settings(ref/'settings.ini', env={}))
    rng = np.random.default_rng(9)
    for trial, delay in enumerate(rng.uniform(1.0, took, 6)):          # the first build and the days, killed anywhere
        root = tmp_path/f'k{trial}'; root.mkdir()
        ini = _settings(root)
        p = subprocess.Popen([sys.executable, '-c', BUILD, str(ini), *days])
        time.sleep(delay); p.kill(); p.wait()
        st = Store(root/'data')
        for layer in LAYERS:
            if st.exists(layer, '1d'): st.read(layer, '1d')              # every table readable at the version it has
        subprocess.run([sys.executable, '-c', BUILD, str(ini), *days], check=True)
        got = load_features(settings=load_settings(ini, env={}))
        pd.testing.assert_frame_equal(got, want, rtol=1e-9, obj=f'trial {trial} killed after {delay:.1f} s')
        assert st.stray() == [], f'trial {trial}: files the killed writer left are still there'


ONE_CORE = textwrap.dedent("""
    import os, sys
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})   # one CPU: delta-rs' runtime sizes itself from this
    from stock_nbs import pipeline as P
    from stock_nbs.config import load_settings
    from stock_nbs.ingest import ingest
    P.BUCKET = 2                                                          # several buckets: the writer waits while the producer reads
    s = load_settings(None, env={}, overrides={'storage.data_dir': sys.argv[1], 'source.kind': 'synthetic', 'source.start': '2024-01-01',
                                               'universe.tickers': 'TCS.NS INFY.NS SBIN.NS ITC.NS AAPL USDINR=X', 'quality.min_rows': '10'})
    ingest(s, run_date='2024-06-28', progress=False)
    print(P.transform(s, progress=False, today='2024-06-28', full=True).tickers.status.tolist())
""")


def test_a_full_pass_on_one_cpu_does_not_deadlock(tmp_path):
    env = {k: v for k, v in __import__('os').environ.items() if k != 'TOKIO_WORKER_THREADS'}
    p = subprocess.run([sys.executable, '-c', ONE_CORE, str(tmp_path/'d')], capture_output=True, text=True, timeout=60, env=env)   # (it takes seconds; a deadlock hangs)
    assert p.returncode == 0 and p.stdout.strip() == str(['ok'] * 6), p.stderr[-2000:]
