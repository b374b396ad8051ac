"""Sync to a real PostgreSQL (started by `make test`) and the REST path at its HTTP boundary."""
import json, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs
import numpy as np, pandas as pd, polars as pl
import psycopg
import pytest
from stock_nbs import load_features
from stock_nbs.config import load_settings, Secrets
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from stock_nbs.store import Store, StoreError
from stock_nbs.sync import sync, migrate, connect, db_frame, COLUMNS, SyncError
from conftest import run_cli

TICKERS = 'TCS.NS INFY.NS SBIN.NS AAPL USDINR=X'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp('sync')
    cfg = load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'source.kind': 'synthetic', 'source.start': '2022-01-01',
                                                  'storage.data_dir': str(root/'data'), 'quality.min_rows': '100',
                                                  'sync.copy_batch_rows': '1000', 'sync.backoff_seconds': '0.1'})
    ingest(cfg, run_date='2024-06-28', progress=False)
    transform(cfg, progress=False, today='2024-06-28')
    return cfg


def fresh(cfg, tmp_path, **over):
    "Settings on a copy of the built data root (each test has its own sync state)."
    import shutil
    shutil.copytree(cfg.data_dir, tmp_path/'data')
    return load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'storage.data_dir': str(tmp_path/'data'),
                                                  'sync.copy_batch_rows': '1000', 'sync.backoff_seconds': '0.1', **over})


def count(url, sql='SELECT count(*) FROM stock_features'):
    with psycopg.connect(url) as c: return c.execute(sql).fetchone()[0]


def test_migrations_create_the_seeds_schema_once(pg_url):
    with connect(pg_url) as conn:
        assert migrate(conn) == ['001_stock_features', '002_views', '003_model_health_alerts', '004_stock_features_intraday']
        assert migrate(conn) == []
        q = lambda sql: [r[0] for r in conn.execute(sql)]
        assert set(q("SELECT conname FROM pg_constraint WHERE conrelid = 'stock_features'::regclass AND contype = 'c'")) == \
            {'stock_features_valid_ohlc', 'stock_features_valid_rsi', 'stock_features_positive_volume'}
        assert q("SELECT conname FROM pg_constraint WHERE conrelid = 'stock_features'::regclass AND contype = 'p'") == ['stock_features_pkey']
        assert {'idx_date_ticker', 'idx_ticker_date', 'idx_created_at', 'idx_updated_at'} <= set(q("SELECT indexname FROM pg_indexes WHERE tablename = 'stock_features'"))
        assert q("SELECT tgname FROM pg_trigger WHERE tgrelid = 'stock_features'::regclass") == ['update_stock_features_updated_at']
        assert set(q("SELECT viewname FROM pg_views WHERE schemaname = 'public'")) == {'latest_stock_data', 'daily_market_summary'}
        types = dict(conn.execute("SELECT column_name, data_type || coalesce('(' || numeric_precision || ',' || numeric_scale || ')', '') FROM information_schema.columns WHERE table_name = 'stock_features'").fetchall())
        assert types['close'] == 'numeric(12,2)' and types['rsi_14'] == 'numeric(6,2)' and types['volume'] == 'bigint(64,0)' and types['date'] == 'date'
        assert q("SELECT count(*) FROM stock_nbs_migrations") == [4]
    assert 'schema up to date' in run_cli('db', 'migrate', env={'DATABASE_URL': pg_url}, check=0).stdout


def test_round_trip_idempotence_and_updated_at(built, tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv('DATABASE_URL', pg_url)                          # load_features(source='postgres') reads it as a user's would
    cfg = fresh(built, tmp_path)
    sec = Secrets({'DATABASE_URL': pg_url})
    rep = sync(cfg, sec)
    local = load_features(settings=cfg)
    assert rep.sent == rep.inserted == len(local) == count(pg_url) and rep.rejected == []
    back = load_features(settings=cfg, source='postgres')
    expected = db_frame(local)
    pd.testing.assert_frame_equal(back, expected, check_dtype=True, atol=1e-9)
    part = load_features(['SBIN.NS', 'AAPL'], start='2024-06-03', end='2024-06-28', columns=['close', 'rsi_14'], settings=cfg, source='postgres')
    loc = load_features(['SBIN.NS', 'AAPL'], start='2024-06-03', end='2024-06-28', columns=['close', 'rsi_14'], settings=cfg)
    pd.testing.assert_frame_equal(part, db_frame(loc.assign(**{c: 0 for c in COLUMNS if c not in loc}))[list(part.columns)], atol=1e-9)
    assert load_features(settings=cfg, source='postgres', engine='polars').equals(pl.from_pandas(back))
    with pytest.raises(StoreError, match="as_of reads a past version of the local gold table; the database holds only the latest rows"):
        load_features(settings=cfg, source='postgres', as_of=0)      # (never the latest rows in place of the past ones)
    again = sync(cfg, sec)
    assert again.pending == again.sent == 0 and count(pg_url) == len(local)
    with psycopg.connect(pg_url) as c:
        before = c.execute("SELECT updated_at, close FROM stock_features WHERE ticker = 'TCS.NS' AND date = '2024-06-28'").fetchone()
        last_write = c.execute("SELECT max(updated_at) FROM stock_features").fetchone()[0]
    Store(cfg.data_dir).table('gold', '1d').update(predicate="ticker = 'TCS.NS' AND date = '2024-06-28'", updates={'close': 'close + 1.5'})   # a revised gold row
    rep = sync(cfg, sec)
    assert (rep.pending, rep.sent, rep.updated, rep.inserted) == (1, 1, 1, 0)
    with psycopg.connect(pg_url) as c:
        after = c.execute("SELECT updated_at, close FROM stock_features WHERE ticker = 'TCS.NS' AND date = '2024-06-28'").fetchone()
        others = c.execute("SELECT count(*) FROM stock_features WHERE updated_at > %s", (last_write,)).fetchone()[0]
    assert after[0] > before[0] and float(after[1]) == pytest.approx(float(before[1]) + 1.5) and others == 1


def test_a_constraint_violation_is_reported_and_the_rest_lands(built, tmp_path, pg_url):
    cfg = fresh(built, tmp_path)
    Store(cfg.data_dir).table('gold', '1d').update(predicate="ticker = 'INFY.NS' AND date = '2024-06-27'", updates={'high': 'low - 5'})
    p = run_cli('sync', '--settings', _ini(cfg, tmp_path), env={'DATABASE_URL': pg_url}, check=1)
    assert 'REFUSED INFY.NS 2024-06-27 00:00:00: valid_ohlc (kept locally)' in p.stdout
    assert count(pg_url) == len(load_features(settings=cfg)) - 1
    assert count(pg_url, "SELECT count(*) FROM stock_features WHERE ticker = 'INFY.NS' AND date = '2024-06-27'") == 0


def _ini(cfg, tmp_path):
    ini = tmp_path/'settings.ini'
    ini.write_text(f"[universe]\ntickers = {TICKERS}\n[storage]\ndata_dir = {cfg.data_dir}\n[sync]\ncopy_batch_rows = 1000\nbackoff_seconds = 0.1\n")
    return ini


def test_a_connection_killed_mid_sync_then_a_rerun_leaves_nothing_missing_or_doubled(built, tmp_path, pg_url, monkeypatch):
    monkeypatch.setenv('DATABASE_URL', pg_url)
    cfg = fresh(built, tmp_path, **{'sync.retries': '0'})
    sec = Secrets({'DATABASE_URL': pg_url})
    with connect(pg_url) as conn:
        migrate(conn)
        with conn.transaction():   # the second batch stalls on SBIN.NS's first row, long enough to kill its connection
            conn.execute("""CREATE FUNCTION stall() RETURNS trigger AS $$ BEGIN
                IF NEW.ticker = 'SBIN.NS' AND NEW.date = (SELECT min(date) FROM stage WHERE ticker = 'SBIN.NS') THEN PERFORM pg_sleep(30); END IF;
                RETURN NEW; END; $$ LANGUAGE plpgsql""")
            conn.execute("CREATE TRIGGER stall BEFORE INSERT ON stock_features FOR EACH ROW EXECUTE FUNCTION stall()")
    def killer():
        with psycopg.connect(pg_url, autocommit=True) as c:
            for _ in range(600):
                if c.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()").fetchone()[0]:
                    return
                time.sleep(0.05)
    k = threading.Thread(target=killer); k.start()
    with pytest.raises(psycopg.OperationalError):
        sync(cfg, sec)
    k.join()
    with psycopg.connect(pg_url, autocommit=True) as c: c.execute("DROP TRIGGER stall ON stock_features")
    landed = count(pg_url)
    local = load_features(settings=cfg)
    assert 1000 <= landed < len(local)                                   # the first batch committed, the second died whole
    rep = sync(cfg, sec)                                                 # the rerun sends only what did not land
    assert rep.sent == len(local) - landed
    assert count(pg_url) == len(local)
    assert count(pg_url, "SELECT count(*) FROM (SELECT ticker, date FROM stock_features GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
    pd.testing.assert_frame_equal(load_features(settings=cfg, source='postgres'), db_frame(local), atol=1e-9)


def test_retries_bring_a_flaky_database_through(built, tmp_path, pg_url, monkeypatch):
    cfg = fresh(built, tmp_path, **{'sync.retries': '3'})
    import stock_nbs.sync as sm
    real, calls = sm._send_batch, []
    def flaky(*a):
        calls.append(1)
        if len(calls) in (2, 3): raise psycopg.OperationalError('server closed the connection unexpectedly')
        return real(*a)
    monkeypatch.setattr(sm, '_send_batch', flaky)
    rep = sync(cfg, Secrets({'DATABASE_URL': pg_url}))
    assert rep.sent == count(pg_url) == len(load_features(settings=cfg)) and len(calls) == rep.sent // 1000 + (rep.sent % 1000 > 0) + 2


def test_drift_alerts_sync_idempotently(built, tmp_path, pg_url):
    cfg = fresh(built, tmp_path)
    from stock_nbs.pipeline import drift_stage
    cfg2 = load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'storage.data_dir': str(cfg.data_dir), 'drift.fdr': '0.5', 'drift.correction': 'none', 'drift.method': 'ks'})
    tests, roll, summary = drift_stage(cfg2, TICKERS.split(), '1d', 'run-a')
    assert summary['drifted'] > 0
    sec = Secrets({'DATABASE_URL': pg_url})
    assert sync(cfg2, sec).alerts == summary['drifted']
    drift_stage(cfg2, TICKERS.split(), '1d', 'run-b')
    sync(cfg2, sec)
    assert count(pg_url, 'SELECT count(*) FROM model_health_alerts') == summary['drifted']
    assert count(pg_url, "SELECT count(*) FROM model_health_alerts WHERE run_id = 'run-b'") == summary['drifted']


def test_missing_credentials_and_unreachable_database(built, tmp_path):
    cfg = fresh(built, tmp_path)
    with pytest.raises(SyncError, match='nothing to sync to: set DATABASE_URL'):
        sync(cfg, Secrets({}))
    with pytest.raises(SyncError) as e:
        sync(cfg, Secrets({'DATABASE_URL': 'postgresql://u:hunter2@127.0.0.1:1/db'}))
    assert 'cannot connect to postgresql://u@127.0.0.1:1/db' in str(e.value) and 'hunter2' not in str(e.value)


class PostgREST(BaseHTTPRequestHandler):
    "The HTTP boundary of Supabase's REST API: records upserts, fails the first `fail` requests with 503."
    log, fail = [], 0
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        u = urlsplit(self.path)
        PostgREST.log.append(dict(path=u.path, query=parse_qs(u.query), prefer=self.headers.get('Prefer'), apikey=self.headers.get('apikey'), rows=body))
        if PostgREST.fail > 0:
            PostgREST.fail -= 1
            self.send_response(503); self.send_header('Content-Type', 'application/json'); self.end_headers()
            self.wfile.write(b'{"message": "Service Unavailable", "code": "503"}'); return
        self.send_response(201); self.send_header('Content-Type', 'application/json'); self.end_headers(); self.wfile.write(b'[]')
    def log_message(self, *a): pass


@pytest.fixture
def rest_server():
    PostgREST.log, PostgREST.fail = [], 0
    srv = ThreadingHTTPServer(('127.0.0.1', 0), PostgREST)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown()


def test_rest_path_batches_upserts_with_on_conflict_and_retries(built, tmp_path, rest_server):
    cfg = fresh(built, tmp_path, **{'sync.batch_size': '1000', 'sync.retries': '2'})
    PostgREST.fail = 1
    sec = Secrets({'SUPABASE_URL': rest_server, 'SUPABASE_KEY': 'test-service-key'})
    rep = sync(cfg, sec)
    n = len(load_features(settings=cfg))
    calls = PostgREST.log
    assert rep.sent == n and len(calls) == -(-n // 1000) + 1                # one retried batch
    assert all(c['path'] == '/rest/v1/stock_features' and c['query']['on_conflict'] == ['ticker,date'] for c in calls)
    assert all('resolution=merge-duplicates' in c['prefer'] and c['apikey'] == 'test-service-key' for c in calls)
    assert [len(c['rows']) for c in calls[1:]] == [1000] * (n // 1000) + ([n % 1000] if n % 1000 else [])
    row = calls[1]['rows'][0]
    assert set(row) == set(COLUMNS) and isinstance(row['date'], str) and len(row['date']) == 10
    PostgREST.log = []
    assert sync(cfg, sec).sent == 0 and PostgREST.log == []                 # same change detection: nothing to send
    from stock_nbs.pipeline import drift_stage
    loose = load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'storage.data_dir': str(cfg.data_dir), 'drift.fdr': '0.5', 'drift.correction': 'none', 'drift.method': 'ks'})
    n_alerts = drift_stage(loose, TICKERS.split(), '1d', 'run-r')[2]['drifted']
    assert n_alerts > 0 and sync(loose, sec).alerts == n_alerts             # drift alerts go the REST way too
    al = [c for c in PostgREST.log if c['path'] == '/rest/v1/model_health_alerts']
    assert len(al) == 1 and al[0]['query']['on_conflict'] == ['ticker,feature,method,baseline_start,baseline_end,current_start,current_end']
    assert len(al[0]['rows']) == n_alerts and al[0]['rows'][0]['current_end'] == '2024-06-28'
    PostgREST.log = []
    dry = run_cli('sync', '--settings', _ini(cfg, tmp_path), '--dry-run', '--full', env={'SUPABASE_URL': rest_server, 'SUPABASE_KEY': 'k'}, check=0)
    assert f'would send {n}' in dry.stdout and PostgREST.log == []


def test_daily_run_with_sync_reports_it_and_leaks_no_secret(tmp_path, pg_url):
    host, port, db = pg_url.split('@')[1].split(':')[0], pg_url.rsplit(':', 1)[1].split('/')[0], pg_url.rsplit('/', 1)[1]
    secret_url = f"host={host} port={port} user=postgres password='Very s3cret-pw' dbname={db}"   # key=value form; the server trusts any password
    ini = tmp_path/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS AAPL USDINR=X\n[source]\nkind = synthetic\nstart = 2023-01-01\n"
                   "[quality]\nmin_rows = 100\n[storage]\ndata_dir = data\n")
    p = run_cli('run', '--settings', ini, '--date', '2024-06-28', '--sync', env={'DATABASE_URL': secret_url})
    assert p.returncode == 0, p.stdout + p.stderr
    m = json.loads((next((tmp_path/'runs').glob('*/manifest.json'))).read_text())
    assert m['sync']['status'] == 'ok' and m['sync']['sent'] == count(pg_url) > 0 and m['sync']['target'].endswith('/' + pg_url.rsplit('/', 1)[1])
    for f in [f for f in tmp_path.rglob('*') if f.is_file()]:
        assert b'Very s3cret-pw' not in f.read_bytes() and b'Very s3cret-pw' not in (p.stdout + p.stderr).encode(), f
    p = run_cli('run', '--settings', ini, '--date', '2024-06-28', '--sync', env={'DATABASE_URL': 'postgresql://x:y@127.0.0.1:1/nope'})
    assert p.returncode == 1 and 'sync failed: cannot connect to postgresql://x@127.0.0.1:1/nope' in p.stdout
    p = run_cli('run', '--settings', ini, '--date', '2024-06-28', '--sync', env={'DATABASE_URL': 'postgresql://x:Sp ace-s3cret@127.0.0.1:1/nope'})
    assert p.returncode == 1 and 'sync failed: DATABASE_URL is not a connection string PostgreSQL can read' in p.stdout
    for f in [f for f in tmp_path.rglob('*') if f.is_file()]:                # the driver's own message would have quoted it
        assert b'ace-s3cret' not in f.read_bytes() and 'ace-s3cret' not in p.stdout + p.stderr, f


def test_intraday_rows_round_trip_with_their_instants(tmp_path, pg_url, monkeypatch):
    "15-minute bars of an NSE and a US ticker land in stock_features_intraday at the same UTC instants, rounded to the schema."
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS AAPL USDINR=X', 'source.kind': 'synthetic', 'source.interval': '15m',
                                                  'source.intraday_days': '10', 'storage.data_dir': str(tmp_path/'data'), 'quality.min_rows': '10',
                                                  'sync.copy_batch_rows': '1000'})
    ingest(cfg, ['USDINR=X'], run_date='2024-06-28', interval='1d', progress=False)
    ingest(cfg, run_date='2024-06-28', progress=False)
    transform(cfg, progress=False, today='2024-06-28')
    rep = sync(cfg, Secrets({'DATABASE_URL': pg_url}), interval='15m')
    local = load_features(settings=cfg, interval='15m')
    assert rep.sent == rep.inserted == len(local) == count(pg_url, 'SELECT count(*) FROM stock_features_intraday') > 1000
    monkeypatch.setenv('DATABASE_URL', pg_url)
    back = load_features(settings=cfg, interval='15m', source='postgres')
    pd.testing.assert_frame_equal(back, db_frame(local), atol=1e-9)
    assert str(back.date.dt.tz) == 'UTC' and back.date.dt.minute.isin([0, 15, 30, 45]).all() and (back.date.dt.second == 0).all()
