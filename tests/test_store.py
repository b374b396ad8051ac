"""Store: layout, unwritable roots, and the lock between two processes."""
import subprocess, sys, time, textwrap
import pandas as pd
import pytest
from stock_nbs.store import Store, StoreError
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from conftest import CLI


def test_layout_one_file_per_layer_interval_ticker(tmp_path):
    st = Store(tmp_path)
    for layer in ('bronze', 'silver', 'gold'):
        st.write(pd.DataFrame({'x': [1]}), layer, '1d', 'M&M.NS')
    st.write(pd.DataFrame({'x': [1]}), 'bronze', '5m', 'USDINR=X')
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*.parquet')) == [
        'bronze/1d/M&M.NS.parquet', 'bronze/5m/USDINR=X.parquet', 'gold/1d/M&M.NS.parquet', 'silver/1d/M&M.NS.parquet']
    with pytest.raises(StoreError, match="unknown layer 'platinum'"):
        st.path('platinum', '1d', 'X')


def test_unreadable_file_names_itself(tmp_path):
    st = Store(tmp_path)
    p = st.path('bronze', '1d', 'TCS.NS'); p.parent.mkdir(parents=True); p.write_bytes(b'garbage')
    with pytest.raises(StoreError, match=r'TCS.NS.parquet is unreadable .*move it aside'):
        st.read('bronze', '1d', 'TCS.NS')


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
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS AAPL\n[source]\nkind = synthetic\nstart = 2005-01-01\n"
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
    assert sorted(o[1].split(':')[1].strip().split(',')[1] for o in outs) == [' 0 updated', ' 3 updated']
    assert Store(tmp_path/'data').read('bronze', '1d', 'TCS.NS').date.is_unique
