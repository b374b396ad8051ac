"""Past one machine: the same buckets as Ray tasks (a local Ray instance of 2 CPUs), and the same tables on an S3-compatible
object store (moto's S3 server, started here on 127.0.0.1)."""
import os, signal, socket, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np, polars as pl
import pytest
import ray.cloudpickle
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from stock_nbs.sources import make_source
from stock_nbs.store import Store, StoreError, load_features, export_parquet
import stock_nbs.engine, stock_nbs.ingest, stock_nbs.pipeline, stock_nbs.store

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the dying source and task below travel to Ray's workers by value

TICKERS = 'TCS.NS INFY.NS SBIN.NS ITC.NS AAPL'
KEYS = {'bronze': ['ticker', 'date', 'seq'], 'silver': ['ticker', 'date'], 'rejects': ['ticker', 'date', 'seq'], 'gold': ['ticker', 'date']}
DAYS = ('2024-06-26', '2024-06-27')


@pytest.fixture(scope='module', autouse=True)
def ray_down_afterwards():
    "The Ray instance these tests start ends with them: the rest of the suite gets both cores back."
    yield
    stock_nbs.engine.close_engines()


def settings(root, engine='local', retries=3, **more):
    over = {'universe.tickers': TICKERS, 'source.kind': 'synthetic', 'source.start': '2022-01-01', 'quality.min_rows': '10',
            'source.synthetic_faults': 'ohlc nan duplicate placeholder spike', 'source.synthetic_fault_rate': '0.02',
            'storage.data_dir': str(root), 'run.engine': engine, 'run.ray_workers': '2', 'run.task_retries': str(retries), **more}
    return load_settings(None, env={}, overrides=over)


def build(s, days=DAYS, source=None):
    "Ingest and transform each day; the last day's ingest report and transform result."
    for day in days:
        rep = ingest(s, run_date=day, progress=False, source=source)
        res = transform(s, progress=False, today=day)
    return rep, res


def assert_same_tables(a_root, b_root):
    "Every table of two data roots holds the same rows (bronze: but for when they were fetched; quality: each ticker's last report)."
    for layer, key in KEYS.items():
        a, b = (Store(r).read(layer, '1d').drop('fetched_at', strict=False).sort(key) for r in (a_root, b_root))
        assert a.equals(b), layer
    qa, qb = (Store(r).read('quality', '1d').sort('reported_at').group_by('ticker').last().sort('ticker').drop('run_id', 'reported_at') for r in (a_root, b_root))
    assert qa.equals(qb)


@pytest.fixture(scope='module')
def local_tables(tmp_path_factory):
    "The reference: the local engine's tables after the two days."
    root = tmp_path_factory.mktemp('local')/'data'
    build(settings(root))
    return root


def test_the_ray_engine_gives_exactly_the_local_engines_tables(tmp_path, local_tables):
    rep, res = build(settings(tmp_path/'data', 'ray'))
    assert (rep.status != 'failed').all() and (res.tickers.status == 'ok').all() and res.gate == []
    assert res.summary['pass'] != 'full'                                   # the second day was a daily pass, on Ray too
    assert_same_tables(tmp_path/'data', local_tables)


class DyingSource:
    "The synthetic source, except that the process fetching a chunk with `victim` is killed (SIGKILL) the first `deaths` times."
    def __init__(self, s, victim, deaths_file, deaths):
        self.inner, self.victim, self.deaths_file, self.deaths = make_source(s, 'synthetic'), victim, Path(deaths_file), deaths
    def fetch(self, tickers, start, end, interval):
        if self.victim in tickers and _count(self.deaths_file) < self.deaths:
            with self.deaths_file.open('a') as f: f.write(f'{os.getpid()}\n')
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.fetch(tickers, start, end, interval)


def _count(path): return len(path.read_text().split()) if path.exists() else 0


def test_a_killed_ingest_task_is_retried_and_the_run_equals_the_local_one(tmp_path, local_tables, monkeypatch):
    monkeypatch.setattr(stock_nbs.ingest, 'FETCH_CHUNK', 2)                # several chunks: one of them dies
    s = settings(tmp_path/'data', 'ray', retries=2)
    rep, res = build(s, source=DyingSource(s, 'SBIN.NS', tmp_path/'deaths', 2))
    assert _count(tmp_path/'deaths') == 2 and str(os.getpid()) not in (tmp_path/'deaths').read_text().split()  # two Ray workers died, not us
    assert (rep.status != 'failed').all() and (res.tickers.status == 'ok').all()
    assert_same_tables(tmp_path/'data', local_tables)


def test_a_task_that_keeps_dying_fails_its_tickers_only_and_a_rerun_completes(tmp_path, local_tables, monkeypatch):
    monkeypatch.setattr(stock_nbs.ingest, 'FETCH_CHUNK', 2)
    s = settings(tmp_path/'data', 'ray', retries=0)
    ingest(s, run_date=DAYS[0], progress=False)
    transform(s, progress=False, today=DAYS[0])
    rep = ingest(s, run_date=DAYS[1], progress=False, source=DyingSource(s, 'SBIN.NS', tmp_path/'deaths', 1)).set_index('ticker')
    chunk = ['ITC.NS', 'SBIN.NS']                                          # (chunks of 2 in sorted fetch order)
    assert (rep.loc[chunk, 'status'] == 'failed').all() and rep.loc[chunk, 'error'].str.contains('worker of its Ray task died on each of 1 tries').all()
    assert (rep.drop(chunk).status == 'updated').all()                     # the other chunks' tickers were fetched and written
    transform(s, progress=False, today=DAYS[1])
    rep, res = build(s, days=DAYS[1:])                                     # the rerun of the day
    assert (rep.status != 'failed').all() and (res.tickers.status == 'ok').all()
    assert_same_tables(tmp_path/'data', local_tables)


def dying_silver_task(since, **kw):
    "`silver_task`, except that the worker computing the bucket with SBIN.NS is killed while the deaths file says so."
    f = Path(os.environ['STOCK_NBS_TEST_DEATHS'])
    if 'SBIN.NS' in since and not f.exists(): f.write_text('died'); os.kill(os.getpid(), signal.SIGKILL)
    from stock_nbs.pipeline import silver_task
    return silver_task(since, **kw)


def test_a_lost_transform_bucket_fails_its_tickers_keeps_the_watermark_and_a_rerun_catches_up(tmp_path, local_tables, monkeypatch):
    s = settings(tmp_path/'data', 'ray', retries=0)
    build(s, days=DAYS[:1])
    ingest(s, run_date=DAYS[1], progress=False)
    monkeypatch.setattr(stock_nbs.pipeline, 'silver_task', dying_silver_task)
    monkeypatch.setenv('STOCK_NBS_TEST_DEATHS', str(tmp_path/'deaths'))
    stock_nbs.engine.close_engines()                                  # (a fresh Ray instance: its workers see the variable above)
    res = transform(s, progress=False, today=DAYS[1])
    assert (res.tickers.status == 'failed').all() and res.tickers.error.str.contains('worker of its Ray task died').all()  # one bucket: every ticker
    gold = Store(s.data_dir).read('gold', '1d')
    assert str(gold['date'].max()) < DAYS[1]                               # nothing of the day was written
    monkeypatch.undo()
    res = transform(s, progress=False, today=DAYS[1])                      # the next pass still sees the day's bronze rows
    assert res.summary['pass']['recomputed'] == len(TICKERS.split()) and (res.tickers.status == 'ok').all()
    assert_same_tables(tmp_path/'data', local_tables)


# ---- the same tables on an object store -------------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


@pytest.fixture(scope='module')
def moto_server():
    "moto's S3 server on 127.0.0.1 (S3 over HTTP, conditional PUTs included); its endpoint URL."
    port = _free_port()
    p = subprocess.Popen([str(Path(sys.executable).parent/'moto_server'), '-H', '127.0.0.1', '-p', str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try: socket.create_connection(('127.0.0.1', port), timeout=0.2).close(); break
        except OSError: time.sleep(0.1)
    yield f'http://127.0.0.1:{port}'
    p.terminate(); p.wait()


@pytest.fixture
def bucket(moto_server, monkeypatch, tmp_path):
    "A fresh bucket, credentials only in the environment (as a user sets them); its s3:// URI."
    env = dict(AWS_ENDPOINT_URL=moto_server, AWS_ACCESS_KEY_ID='test-key', AWS_SECRET_ACCESS_KEY='test-secret', AWS_REGION='us-east-1', AWS_ALLOW_HTTP='true')
    for k, v in env.items(): monkeypatch.setenv(k, v)
    import boto3
    name = f'stock-nbs-{tmp_path.name.lower().replace("_", "-")[-30:]}'
    boto3.client('s3', endpoint_url=moto_server).create_bucket(Bucket=name)
    return f's3://{name}'


def test_a_run_on_s3_writes_and_reads_back_the_same_dataset(bucket, local_tables):
    s = settings(f'{bucket}/data')
    rep, res = build(s)
    assert (res.tickers.status == 'ok').all() and res.gate == [] and res.summary['pass'] != 'full'
    assert_same_tables(f'{bucket}/data', local_tables)
    want = load_features(settings=settings(local_tables))
    assert load_features(settings=s).equals(want)                          # the quant's reader
    assert pl.scan_delta(f'{bucket}/data/gold/1d').collect().height == len(want)   # polars, credentials from the environment
    out = export_parquet(Store(s.data_dir))
    assert str(out) == f'{bucket}/data/export/1d/features_dataset.parquet' and pl.read_parquet(str(out)).height == len(want)
    assert Store(s.data_dir).held_by() is None                             # every lease released


HOLD = textwrap.dedent("""
    import sys, time
    import stock_nbs.store as st
    st.LEASE_SECONDS = float(sys.argv[2])
    with st.Store(sys.argv[1]).lock(timeout=0, run_id='holder'):
        print('locked', flush=True); time.sleep(60)
""")


def test_two_runs_on_s3_never_interleave_and_a_dead_holders_lease_expires(bucket, monkeypatch):
    root = f'{bucket}/data'
    p = subprocess.Popen([sys.executable, '-c', HOLD, root, '3'], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == 'locked'
        assert Store(root).held_by()['run_id'] == 'holder'
        with pytest.raises(StoreError) as e: ingest(settings(root), run_date=DAYS[0], progress=False)
        assert f'data root {root} is in use by pid {p.pid}' in str(e.value)
        assert not Store(root).exists('bronze', '1d')                      # refused before writing anything
    finally:
        p.kill(); p.wait()                                                 # kill -9: the lease is never released
    assert Store(root).held_by() is not None                               # ...and still looks held until it expires
    monkeypatch.setattr(stock_nbs.store, 'LEASE_SECONDS', 3)
    t0 = time.monotonic()
    rep = ingest(settings(root, **{'storage.lock_timeout_seconds': '30'}), run_date=DAYS[0], progress=False)
    assert time.monotonic() - t0 > 1 and (rep.status == 'updated').all()   # waited for the dead holder's lease to run out


RACE = textwrap.dedent("""
    import sys
    from stock_nbs.config import load_settings
    from stock_nbs.ingest import ingest
    s = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS AAPL', 'source.kind': 'synthetic', 'source.start': '2015-01-01',
                                               'storage.data_dir': sys.argv[1], 'storage.lock_timeout_seconds': '120'})
    rep = ingest(s, run_date='2024-06-28', progress=False)
    print((rep.status == 'updated').sum())
""")


def test_two_ingests_on_s3_started_at_once_run_one_after_the_other(bucket):
    root = f'{bucket}/race'
    procs = [subprocess.Popen([sys.executable, '-c', RACE, root], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=180), *p.communicate()) for p in procs]
    assert [o[0] for o in outs] == [0, 0], outs
    assert sorted(o[1].strip() for o in outs) == ['0', '4']               # the second saw the first's rows: nothing new to add
    t = Store(root).table('bronze', '1d')
    assert [h['operation'] for h in t.history()][::-1][:1] == ['WRITE'] and t.version() == 0   # one commit: the second wrote nothing
    assert not Store(root).read('bronze', '1d')[['ticker', 'date', 'seq']].is_duplicated().any()
