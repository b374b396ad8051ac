"""`make faults`: a bounded fault-injection campaign anyone can rerun (a few minutes).

- kill -9 at random points of a first build and of the days after it (`--kills`, default 24): every table must stay
  readable, a rerun must complete and give exactly the uninterrupted result (no row lost or doubled), and nothing the
  killed writer left may remain on disk after the rerun;
- the database stopped and restarted at a random point of a sync (`--restarts`, default 6): the sync must ride it out
  (or a rerun finish it), and the database must then hold exactly the local rows, once each;
- DATABASE_URL in every form the driver accepts (URL, percent-encoded, query parameter, key=value, malformed ones) and
  PGPASSWORD: no spelling of the password may appear in the console, a log, a manifest, the executed notebook or a report.

It prints one line per kind of trial and a total; every count but `trials` must be zero (exit 1 otherwise).
It writes reports/faults.md and reports/faults.json.
"""
import argparse, json, os, random, shutil, subprocess, sys, tempfile, textwrap, threading, time
from pathlib import Path
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TICKERS = 'TCS.NS INFY.NS SBIN.NS ITC.NS AAPL USDINR=X'
DAYS = ['2024-06-26', '2024-06-27', '2024-06-28']
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


def settings_file(root: Path, start='2019-01-01', extra='') -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root/'settings.ini').write_text(f"[universe]\ntickers = {TICKERS}\n[source]\nkind = synthetic\nstart = {start}\n"
                                     "synthetic_faults = ohlc spike duplicate placeholder nan\n[quality]\nmin_rows = 10\n"
                                     f"[storage]\ndata_dir = data\n{extra}")
    return root/'settings.ini'


def build(ini: Path, days=DAYS):
    subprocess.run([sys.executable, '-c', BUILD, str(ini), *days], check=True, capture_output=True)


def key_diff(got: pd.DataFrame, want: pd.DataFrame) -> tuple[int, int]:
    "(rows of `want` missing from `got`, rows of `got` doubled) by (ticker, date)."
    k = lambda df: set(zip(df.ticker, df.date))
    return len(k(want) - k(got)), int(got.duplicated(['ticker', 'date']).sum())


def kill_trials(work: Path, n: int, rng: random.Random) -> dict:
    from stock_nbs import load_features
    from stock_nbs.config import load_settings
    from stock_nbs.store import Store, StoreError, LAYERS
    ref = settings_file(work/'ref')
    t0 = time.monotonic(); build(ref); took = time.monotonic() - t0
    want = load_features(settings=load_settings(ref, env={}))
    out = dict(trials=0, unreadable_tables=0, failed_reruns=0, rows_lost=0, rows_doubled=0, values_differ=0, stray_files_after_rerun=0)
    for i in range(n):
        ini = settings_file(work/f'kill{i}')
        p = subprocess.Popen([sys.executable, '-c', BUILD, str(ini), *DAYS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, took)); p.kill(); p.wait()
        st = Store(ini.parent/'data')
        for layer in LAYERS:
            try:
                if st.exists(layer, '1d'): st.read(layer, '1d')
            except StoreError: out['unreadable_tables'] += 1
        try: build(ini)
        except subprocess.CalledProcessError: out['failed_reruns'] += 1; out['trials'] += 1; continue
        got = load_features(settings=load_settings(ini, env={}))
        lost, doubled = key_diff(got, want)
        out['rows_lost'] += lost; out['rows_doubled'] += doubled
        try: pd.testing.assert_frame_equal(got, want, rtol=1e-9)
        except AssertionError: out['values_differ'] += 1
        out['stray_files_after_rerun'] += len(st.stray())
        out['trials'] += 1
        shutil.rmtree(ini.parent)
    return out


def pg(*args) -> str:
    return subprocess.run([str(REPO/'tools'/'pg.sh'), *map(str, args)], check=True, capture_output=True, text=True).stdout.strip()


def restart_trials(work: Path, n: int, rng: random.Random) -> dict:
    import psycopg
    from stock_nbs import load_features
    from stock_nbs.config import load_settings, Secrets
    from stock_nbs.sync import sync, db_frame, read_postgres
    ini = settings_file(work/'sync', start='2010-01-01', extra="[sync]\ncopy_batch_rows = 2000\nconnections = 2\nretries = 6\nbackoff_seconds = 0.5\n")
    build(ini, DAYS[:1])
    cfg = load_settings(ini, env={})
    local = db_frame(load_features(settings=cfg))
    pgdir = Path(tempfile.mkdtemp(prefix='stock_nbs_pg.'))  # (the server's user must be able to enter it)
    out = dict(trials=0, syncs_failed=0, reruns_failed=0, rows_lost=0, rows_doubled=0, values_differ=0)
    try:
        url = pg('start', pgdir); port = url.rsplit(':', 1)[1].split('/')[0]
        sec = Secrets({'DATABASE_URL': url})
        t0 = time.monotonic(); sync(cfg, sec, full=True); took = time.monotonic() - t0
        for i in range(n):
            with psycopg.connect(url, autocommit=True) as c: c.execute('TRUNCATE stock_features')
            def bounce(delay=rng.uniform(0.05, max(took, 0.2))):
                time.sleep(delay); pg('stop', pgdir); time.sleep(rng.uniform(0.2, 1.5)); pg('start', pgdir, port)
            b = threading.Thread(target=bounce); b.start()
            try: sync(cfg, sec, full=True)
            except Exception: out['syncs_failed'] += 1
            b.join()
            try: sync(cfg, sec)                                          # what a failed one left, the next sends
            except Exception: out['reruns_failed'] += 1; out['trials'] += 1; continue
            got = read_postgres(url)
            lost, doubled = key_diff(got, local)
            out['rows_lost'] += lost; out['rows_doubled'] += doubled
            try: pd.testing.assert_frame_equal(got, local, atol=1e-9)
            except AssertionError: out['values_differ'] += 1
            out['trials'] += 1
    finally:
        subprocess.run([str(REPO/'tools'/'pg.sh'), 'stop', str(pgdir)], capture_output=True)
        shutil.rmtree(pgdir, ignore_errors=True)
    return out


FORMS = {  # DATABASE_URL as a user may write it -> its password as written and as the driver reads it: none may ever be printed
    'url': ('postgresql://postgres:pw-Url-123@{host}:{port}/{db}', ['pw-Url-123']),
    'url, percent-encoded': ('postgresql://postgres:p%40ss%20Enc-456@{host}:{port}/{db}', ['p%40ss%20Enc-456', 'p@ss Enc-456']),
    'url, query parameter': ('postgresql://{host}:{port}/{db}?user=postgres&password=pw-Query-789', ['pw-Query-789']),
    'key=value, quoted': ("host={host} port={port} user=postgres password='pw Kv-012' dbname={db}", ['pw Kv-012']),
    'key=value, unreachable': ("host=127.0.0.1 port=1 user=postgres password=pw-Down-345 dbname={db}", ['pw-Down-345']),
    'url, unencoded space': ('postgresql://postgres:pw Space-678@{host}:{port}/{db}', ['pw Space-678', 'Space-678']),
    'key=value, unquoted space': ("host={host} port={port} password=pw Bare-901 dbname={db}", ['pw Bare-901', 'Bare-901']),
}
PGPASSWORD = 'pg-Env-Secret-55'


def secret_trials(work: Path) -> dict:
    pgdir = Path(tempfile.mkdtemp(prefix='stock_nbs_pg.'))
    out = dict(trials=0, secret_hits=0)
    try:
        url = pg('start', pgdir); host, port = '127.0.0.1', url.rsplit(':', 1)[1].split('/')[0]
        for i, (name, (form, secrets)) in enumerate(FORMS.items()):
            ini = settings_file(work/f'secret{i}', start='2023-01-01')
            env = {**os.environ, 'DATABASE_URL': form.format(host=host, port=port, db='postgres'), 'PGPASSWORD': PGPASSWORD}
            cmds = [['run', '--date', DAYS[0], '--sync'], ['sync'], ['db', 'migrate']] if i in (3, 5) else [['sync']]
            texts = []
            for cmd in ([['ingest', '--date', DAYS[0]], ['transform']] if i not in (3, 5) else []) + cmds:
                p = subprocess.run([str(BIN/'stock-nbs'), cmd[0], '--settings', str(ini), *cmd[1:]], capture_output=True, text=True, env=env)
                texts += [p.stdout, p.stderr]
            texts += [f.read_bytes().decode('latin-1') for f in ini.parent.rglob('*') if f.is_file()]
            hits = sum(t.count(s) for t in texts for s in secrets + [PGPASSWORD])
            if hits: print(f"  secret found with DATABASE_URL as {name}", file=sys.stderr)
            out['secret_hits'] += hits; out['trials'] += 1
    finally:
        subprocess.run([str(REPO/'tools'/'pg.sh'), 'stop', str(pgdir)], capture_output=True)
        shutil.rmtree(pgdir, ignore_errors=True)
    return out


def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument('--kills', type=int, default=24); a.add_argument('--restarts', type=int, default=6); a.add_argument('--seed', type=int, default=20)
    a = a.parse_args()
    rng, work = random.Random(a.seed), Path(tempfile.mkdtemp(prefix='stock_nbs_faults.'))
    t0, results = time.monotonic(), {}
    try:
        for name, fn in (('kill -9 during a build and days', lambda: kill_trials(work, a.kills, rng)),
                         ('database restarted mid-sync', lambda: restart_trials(work, a.restarts, rng)),
                         ('DATABASE_URL forms and PGPASSWORD', lambda: secret_trials(work))):
            t = time.monotonic(); results[name] = fn(); results[name]['seconds'] = round(time.monotonic() - t, 1)
            print(f"{name}: " + ', '.join(f"{k} {v}" for k, v in results[name].items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bad = {f"{n}: {k}": v for n, r in results.items() for k, v in r.items() if k not in ('trials', 'seconds') and v}
    lines = [f"# make faults ({time.strftime('%Y-%m-%d %H:%M')}, seed {a.seed}, {time.monotonic() - t0:.0f} s)", '',
             '| trials | counts (all must be 0) |', '|---|---|']
    lines += [f"| {n}: {r['trials']} | " + ', '.join(f"{k} {v}" for k, v in r.items() if k not in ('trials', 'seconds')) + ' |' for n, r in results.items()]
    lines += ['', 'PASSED: every count is zero' if not bad else 'FAILED: ' + ', '.join(f"{k} = {v}" for k, v in bad.items())]
    (REPO/'reports').mkdir(exist_ok=True)
    (REPO/'reports'/'faults.md').write_text('\n'.join(lines) + '\n')
    (REPO/'reports'/'faults.json').write_text(json.dumps(results, indent=1))
    print('\n'.join(lines[-1:]))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
