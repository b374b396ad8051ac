"""Faults and secrets: a database password in every form the driver accepts stays out of every output; a database restart
is ridden out; damaged tables are named and rebuilt; a killed writer's files are removed; the kernel dies with its run;
every writer takes the lock; small failures say what is wrong and what to do."""
import json, logging, os, shutil, signal, socket, subprocess, sys, textwrap, threading, time
from pathlib import Path
import pandas as pd, polars as pl, psutil
import pytest
from conftest import CLI, REPO, run_cli
from stock_nbs import load_features
from stock_nbs.config import load_settings, Secrets, ScrubbingFormatter
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from stock_nbs.sources import CsvSource
from stock_nbs.store import Store, StoreError, LAYERS, checkout_settings, _reader_settings
from stock_nbs.sync import sync, redact, SyncError

TICKERS = 'TCS.NS INFY.NS AAPL USDINR=X'


def settings_for(root, **over):
    return load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'source.kind': 'synthetic', 'source.start': '2023-01-01',
                                                  'storage.data_dir': str(root), 'quality.min_rows': '10', **over})


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    "A small store built to 2024-06-27 (copied by each test that changes it)."
    root = tmp_path_factory.mktemp('faults')/'data'
    cfg = settings_for(root)
    ingest(cfg, run_date='2024-06-27', progress=False)
    transform(cfg, progress=False, today='2024-06-27')
    return root


def copy_of(built, tmp_path, **over):
    shutil.copytree(built, tmp_path/'data')
    return settings_for(tmp_path/'data', **over)


# --- 1. the database password, in every form -------------------------------------------------------------------

sys.path.insert(0, str(REPO/'tools'))
from faults import FORMS, PGPASSWORD  # the campaign's forms of DATABASE_URL, shared


def test_redact_names_the_target_without_its_password_in_every_form():
    ok = {k: v for k, v in FORMS.items() if 'space' not in k}
    for name, (form, secrets) in ok.items():
        shown = redact(form.format(host='db.example', port=5432, db='prod'))
        assert shown == ('postgresql://postgres@127.0.0.1:1/prod' if 'unreachable' in name else 'postgresql://postgres@db.example:5432/prod'), name
    for name in ('url, unencoded space', 'key=value, unquoted space'):   # malformed: the driver's message would quote the password
        form, secrets = FORMS[name]
        with pytest.raises(SyncError) as e: redact(form.format(host='db', port=5432, db='prod'))
        assert 'percent-encode' in str(e.value) and not any(s in str(e.value) for s in secrets)


def test_log_lines_and_tracebacks_pass_through_the_scrubber():
    sec = Secrets({'DATABASE_URL': "host=db password='pw Kv-012'", 'SUPABASE_KEY': 'eyJ-service-key-1'})
    rec = logging.getLogger('t').makeRecord('t', logging.ERROR, __file__, 1, 'connect %s failed', ("host=db password='pw Kv-012'",), None)
    try: raise RuntimeError('key eyJ-service-key-1 refused')
    except RuntimeError: rec.exc_info = sys.exc_info()
    line = ScrubbingFormatter(sec).format(rec)
    assert 'RuntimeError' in line and 'connect *** failed' in line and 'eyJ-service' not in line and 'Kv-012' not in line


def _leaks(texts, secrets):
    return [(where, s) for where, t in texts for s in secrets if s in t]


def test_no_form_of_the_password_reaches_the_console_or_a_file(built, tmp_path, pg_url):
    host, port, db = pg_url.split('@')[1].split(':')[0], pg_url.rsplit(':', 1)[1].split('/')[0], pg_url.rsplit('/', 1)[1]
    for i, (name, (form, secrets)) in enumerate(FORMS.items()):
        root = tmp_path/f'f{i}'
        cfg = copy_of(built, root)
        ini = root/'settings.ini'
        ini.write_text(f"[universe]\ntickers = {TICKERS}\n[storage]\ndata_dir = data\n[sync]\nretries = 0\n")
        p = run_cli('sync', '--settings', ini, env={'DATABASE_URL': form.format(host=host, port=port, db=db), 'PGPASSWORD': PGPASSWORD})
        assert p.returncode == (0 if 'space' not in name and 'unreachable' not in name else 2), (name, p.stdout, p.stderr)
        texts = [('stdout', p.stdout), ('stderr', p.stderr)] + [(str(f), f.read_bytes().decode('latin-1')) for f in root.rglob('*') if f.is_file()]
        assert not _leaks(texts, secrets + [PGPASSWORD]), name
        if p.returncode: assert 'cannot connect to postgresql://postgres@127.0.0.1:1/' in p.stderr or 'percent-encode' in p.stderr, (name, p.stderr)


# --- 2. a database restart ----------------------------------------------------------------------------------------

def test_a_database_restarting_during_the_sync_is_ridden_out(built, tmp_path):
    import tempfile
    pgdir = Path(tempfile.mkdtemp(prefix='stock_nbs_pg.'))                     # (the server's user cannot enter pytest's private folders)
    try:
        url = subprocess.run(['tools/pg.sh', 'start', str(pgdir)], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        port = url.rsplit(':', 1)[1].split('/')[0]
        subprocess.run(['tools/pg.sh', 'stop', str(pgdir)], cwd=REPO, check=True)   # down when the sync starts ...
        restart = threading.Timer(1.0, lambda: subprocess.run(['tools/pg.sh', 'start', str(pgdir), port], cwd=REPO, check=True, capture_output=True))
        restart.start()                                                              # ... and back a second later, with its data
        cfg = copy_of(built, tmp_path, **{'sync.retries': '5', 'sync.backoff_seconds': '0.5'})
        rep = sync(cfg, Secrets({'DATABASE_URL': url}))
        restart.join()
        import psycopg
        with psycopg.connect(url) as c: assert c.execute('SELECT count(*) FROM stock_features').fetchone()[0] == rep.sent == len(load_features(settings=cfg))
    finally:
        subprocess.run(['tools/pg.sh', 'stop', str(pgdir)], cwd=REPO)
        shutil.rmtree(pgdir, ignore_errors=True)


# --- 3. damaged tables --------------------------------------------------------------------------------------------

def _damage(path: Path):
    "Overwrite the middle of a Parquet file: its footer still reads, its pages do not."
    b = bytearray(path.read_bytes())
    b[100:len(b) // 2] = b'\x00' * (len(b) // 2 - 100)
    path.write_bytes(bytes(b))


def test_a_damaged_gold_file_is_named_and_the_daily_pass_rebuilds_it(built, tmp_path, caplog):
    cfg = copy_of(built, tmp_path)
    bad = sorted((tmp_path/'data'/'gold'/'1d').rglob('*.parquet'))[-1]
    _damage(bad)
    with pytest.raises(StoreError) as e: load_features(settings=cfg)
    assert str(bad) in str(e.value) and 'stock-nbs transform --full' in str(e.value)
    ingest(cfg, run_date='2024-06-28', progress=False)
    with caplog.at_level(logging.WARNING, logger='stock_nbs'):
        res = transform(cfg, progress=False, today='2024-06-28')
    assert res.summary['pass'] == 'full' and any(str(bad) in r.getMessage() and 'rebuilt from bronze' in r.getMessage() for r in caplog.records)
    daily = load_features(settings=cfg)
    transform(cfg, progress=False, today='2024-06-28', full=True)
    pd.testing.assert_frame_equal(daily, load_features(settings=cfg))


def test_a_damaged_bronze_file_is_named_with_the_restore_to_do(built, tmp_path):
    cfg = copy_of(built, tmp_path)
    bad = sorted((tmp_path/'data'/'bronze'/'1d').rglob('*.parquet'))[-1]
    _damage(bad)
    p = run_cli('ingest', '--settings', _ini(tmp_path), '--date', '2024-06-28', '--source', 'synthetic', check=2)
    assert str(bad) in p.stderr and 'restore' in p.stderr and 'Traceback' not in p.stderr


def _ini(root):
    (root/'settings.ini').write_text(f"[universe]\ntickers = {TICKERS}\n[source]\nkind = synthetic\nstart = 2023-01-01\n[quality]\nmin_rows = 10\n[storage]\ndata_dir = data\n")
    return root/'settings.ini'


# --- 4. what a killed writer leaves -------------------------------------------------------------------------------

HOLD = "import sys, time\nfrom stock_nbs.store import Store\nwith Store(sys.argv[1]).lock():\n    print('locked', flush=True); time.sleep(60)\n"


def _hold_lock(root):
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'locked'
    return p


def test_the_files_a_killed_writer_left_are_removed_by_the_next_writer(built, tmp_path):
    cfg = copy_of(built, tmp_path)
    st = Store(tmp_path/'data')
    before = load_features(settings=cfg)
    holder = _hold_lock(st.root); holder.kill(); holder.wait()                 # killed holding the lock: its record stays
    some = sorted((st.root/'gold'/'1d').rglob('*.parquet'))[-1]
    shutil.copy(some, some.with_name('part-99999-killed-write.snappy.parquet'))  # a data file its commit never referenced
    (st.root/'export'/'1d').mkdir(parents=True, exist_ok=True)
    (st.root/'export'/'1d'/'.features_dataset.parquet.ab12cd34.tmp').write_bytes(b'x' * 10_000)
    assert len(st.stray()) == 2
    transform(cfg, progress=False, today='2024-06-27')                          # the next writer
    assert st.stray() == []
    pd.testing.assert_frame_equal(load_features(settings=cfg), before)
    assert len(load_features(settings=cfg, as_of=0)) > 0                      # history kept


# --- 5. the kernel dies with its run -----------------------------------------------------------------------------

def _dead_within(proc, seconds):
    "Whether `proc` exits (a zombie waiting for init to reap it counts as exited) within `seconds`."
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if proc.status() == psutil.STATUS_ZOMBIE: return True
        except psutil.NoSuchProcess: return True
        time.sleep(0.01)
    return False


def test_the_kernel_dies_with_a_killed_run_and_frees_the_lock(tmp_path):
    ini = tmp_path/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS SBIN.NS ITC.NS AAPL USDINR=X\n[source]\nkind = synthetic\nstart = 2005-01-01\n"
                   "[quality]\nmin_rows = 10\n[storage]\ndata_dir = data\n")
    run = subprocess.Popen([*CLI, 'run', '--settings', str(ini), '--date', '2024-06-28'], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    record = tmp_path/'data'/'.stock_nbs.lock.json'
    for _ in range(600):                                                         # until the kernel holds the data root's lock
        kernels = [c for c in psutil.Process(run.pid).children() if 'ipykernel' in ' '.join(c.cmdline())]
        if kernels and record.exists(): break
        time.sleep(0.05)
    assert kernels and record.exists() and json.loads(record.read_text())['pid'] == kernels[0].pid
    run.send_signal(signal.SIGKILL); run.wait()
    assert _dead_within(kernels[0], 0.1)                                        # (ipykernel notices a dead parent by polling once a second)
    again = run_cli('run', '--settings', ini, '--date', '2024-06-28')
    assert again.returncode == 0 and 'in use by' not in again.stdout, again.stdout


# --- 6. every writer takes the lock ------------------------------------------------------------------------------

def test_baseline_and_sync_refuse_while_another_run_holds_the_lock(built, tmp_path):
    copy_of(built, tmp_path)
    holder = _hold_lock(tmp_path/'data')
    try:
        for cmd in (['baseline'], ['sync']):
            p = run_cli(*cmd, '--settings', _ini(tmp_path), env={'DATABASE_URL': 'postgresql://u@127.0.0.1:1/x'}, check=2)
            assert f'is in use by pid {holder.pid}' in p.stderr, cmd
        assert not (tmp_path/'data'/'drift').exists() or not any((tmp_path/'data'/'drift').rglob('baseline*'))
    finally:
        holder.kill(); holder.wait()


# --- 7. small failures, stated plainly ---------------------------------------------------------------------------

def test_a_header_only_csv_fails_its_ticker_naming_the_file(tmp_path):
    (tmp_path/'TCS.NS.csv').write_text('Date,Open,High,Low,Close,Adj Close,Volume\n')
    res = CsvSource(tmp_path).fetch(['TCS.NS', 'INFY.NS'], '2024-01-01', '2024-06-28')
    assert 'TCS.NS.csv: a header but no rows' in res.failed['TCS.NS']
    assert 'leave it out of [universe] tickers (or pass --tickers)' in res.failed['INFY.NS']   # no file at all: narrow the universe


def test_a_future_date_is_refused_before_any_notebook_runs(tmp_path):
    p = run_cli('run', '--settings', _ini(tmp_path), '--date', '2999-01-01', check=2)
    assert 'run date 2999-01-01 is in the future' in p.stderr and not (tmp_path/'runs').exists()


def test_a_run_refused_by_the_lock_is_in_status_with_its_reason(built, tmp_path):
    copy_of(built, tmp_path)
    holder = _hold_lock(tmp_path/'data')
    try: p = run_cli('run', '--settings', _ini(tmp_path), '--date', '2024-06-28', check=1)
    finally: holder.kill(); holder.wait()
    m = json.loads(Path(next(l.split(': ', 1)[1] for l in p.stdout.splitlines() if l.startswith('manifest: '))).read_text())
    assert m['status'] == 'failed' and 'in use by' in m['reasons'][0]
    status = run_cli('status', '--settings', _ini(tmp_path), check=0).stdout
    assert m['run_id'] in status and 'failed' in status


def test_the_dashboard_refuses_a_busy_port_instead_of_moving(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        port = s.getsockname()[1]
        p = run_cli('dashboard', '--settings', _ini(tmp_path), '--port', port, check=2)
    assert f'127.0.0.1:{port}' in p.stderr and '--port' in p.stderr and 'dashboard: http' not in p.stdout


def test_load_features_names_unknown_tickers_and_intervals(built, tmp_path):
    cfg = settings_for(built)
    with pytest.raises(StoreError, match=r"unknown ticker\(s\) tcs.ns \(did you mean TCS.NS\?\), NOPE.NS"):
        load_features(['tcs.ns', 'NOPE.NS', 'INFY.NS'], settings=cfg)
    with pytest.raises(StoreError, match="interval '2d' is not one of 1m, .*1d"):
        load_features(settings=cfg, interval='2d')
    with pytest.raises(StoreError, match=r"no 15m gold table in .*; it has 1d"):
        load_features(settings=cfg, interval='15m')
    assert len(load_features(['TCS.NS'], start='2030-01-01', settings=cfg)) == 0   # a known ticker with no rows then: empty, no error


def test_readers_find_the_project_settings_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                                                 # a folder outside the project
    assert checkout_settings() == REPO/'settings.ini'
    assert _reader_settings(None).path == REPO/'settings.ini'
