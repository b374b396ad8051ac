"""The daily run end to end: papermill notebook, manifest, report, isolation, idempotence, exit codes, secrets, locking, intraday."""
import hashlib, json, shutil, subprocess
import nbformat
import numpy as np, pandas as pd, polars as pl
import pytest
from conftest import CLI, run_cli
from stock_nbs import load_features
from stock_nbs.config import load_settings
from stock_nbs.store import Store, run_summaries

TICKERS = 'TCS.NS INFY.NS SBIN.NS ITC.NS RELIANCE.NS HDFCBANK.NS AAPL MSFT USDINR=X EURGBP=X'
SECRETS = {'DATABASE_URL': 'postgresql://quant:Sup3r-s3cret-pw@db.example.supabase.co:5432/postgres',
           'SUPABASE_KEY': 'eyJhbGciOiJIUzI1NiJ9.secret-service-key-42'}


def write_ini(folder, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    sections = {'universe': {'tickers': TICKERS},
                'source': {'kind': 'synthetic', 'start': '2022-01-01', 'synthetic_faults': 'ohlc nan duplicate placeholder spike',
                           'synthetic_fault_rate': '0.02'},
                'quality': {'min_rows': '1000'}, 'storage': {'data_dir': 'data'}, 'run': {'max_failure_share': '0.2'}}
    for k, v in extra.items():
        sec, key = k.split('__'); sections.setdefault(sec, {})[key] = v
    text = '\n'.join(f"[{s}]\n" + '\n'.join(f"{k} = {v}" for k, v in kv.items()) for s, kv in sections.items())
    (folder/'settings.ini').write_text(text + '\n')
    return folder/'settings.ini'


def manifest_of(stdout):
    path = next(l.split(': ', 1)[1] for l in stdout.splitlines() if l.startswith('manifest: '))
    return json.loads(open(path).read()), path


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
    ini = write_ini(tmp_path_factory.mktemp('daily'))          # EURGBP=X: quoted in GBP, which cannot be converted to INR; it must fail alone
    p = run_cli('run', '--settings', ini, '--date', '2024-06-28', env=SECRETS)
    return ini, p


def test_run_succeeds_degraded_and_says_where_things_are(first_run):
    ini, p = first_run
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'DEGRADED, 9 of 10 tickers ok' in p.stdout
    for label in ('executed notebook', 'report', 'manifest', 'data'):
        assert any(l.startswith(f'{label}: ') for l in p.stdout.splitlines()), label


def test_manifest_lists_every_ticker_counts_faults_and_isolates_the_failure(first_run):
    ini, p = first_run
    m, path = manifest_of(p.stdout)
    per = {t['ticker']: t for t in m['per_ticker']}
    assert list(per) == TICKERS.split()
    bad = per['EURGBP=X']
    assert bad['status'] == 'failed' and 'EURGBP=X is quoted in GBP' in bad['transform_error'] and 'remove EURGBP=X from [universe] tickers' in bad['transform_error']
    assert all(t['status'] == 'ok' and t['gold_rows'] > 400 for k, t in per.items() if k != 'EURGBP=X')
    tot = m['quality']['totals']
    for fault in ('duplicates_dropped', 'nulls_dropped', 'placeholder_dropped', 'spikes_repaired', 'ohlc_repaired'):
        assert tot.get(fault, 0) > 10, fault
    assert m['tickers'] == {'total': 10, 'ok': 9, 'failed': 1, 'success_rate': 0.9, 'max_failure_share': 0.2}
    assert m['status'] == 'degraded' and m['quality']['gate'] == []
    assert set(m['timings']) >= {'ingest', 'transform_total', 'plan', 'silver', 'gold', 'quality', 'gate', 'export'}
    assert set(m['versions']['written']) >= {'bronze/1d', 'silver/1d', 'gold/1d', 'quality/1d'}
    assert m['rows']['gold_rows'] == sum(t['gold_rows'] for t in m['per_ticker'])
    assert m['code_version']['stock_nbs'] and m['parameters']['run_date'] == '2024-06-28'
    assert (ini.parent/'runs'/m['run_id']/'run.log').read_text().count('EURGBP=X') >= 1


def test_the_runs_table_keeps_the_runs_summary_for_history_views(first_run):
    ini, p = first_run
    m, path = manifest_of(p.stdout)
    s = next(x for x in run_summaries(load_settings(ini, env={}), 100) if x['run_id'] == m['run_id'])
    assert 'per_ticker' not in s and 'settings' not in s            # they grow with the universe; the manifest keeps them
    assert {k: s[k] for k in ('status', 'reasons', 'tickers', 'timings', 'rows', 'versions')} == {k: m[k] for k in ('status', 'reasons', 'tickers', 'timings', 'rows', 'versions')}
    assert s['failed_tickers'] == [t for t in m['per_ticker'] if t['ticker'] == 'EURGBP=X']
    status = run_cli('status', '--settings', ini)
    row = next(l for l in status.stdout.splitlines() if m['run_id'] in l)
    assert 'degraded' in row and 'EURGBP=X' in row, status.stdout


def test_an_unreadable_manifest_is_named_and_the_other_runs_are_still_listed(first_run):
    ini, p = first_run
    m, _ = manifest_of(p.stdout)
    cut = ini.parent/'runs'/'20240101T000000Z_1d_2024-01-01_dead'/'manifest.json'   # cut short by hand: the pipeline writes manifests atomically
    cut.parent.mkdir(); cut.write_text('{"run_id": "20240101T0')
    try:
        status = run_cli('status', '--settings', ini, check=0)
        assert m['run_id'] in status.stdout and '_dead' not in status.stdout, status.stdout
        assert str(cut) in status.stderr and "restore it, or delete the run's folder" in status.stderr and 'Traceback' not in status.stderr, status.stderr
    finally: shutil.rmtree(cut.parent)


def test_executed_notebook_and_report_hold_the_summaries(first_run):
    ini, p = first_run
    m, path = manifest_of(p.stdout)
    nb = (ini.parent/'runs'/m['run_id']/'daily_run.ipynb').read_text()
    html = (ini.parent/'reports'/f"{m['run_id']}.html").read_text()
    for text in ('Run DEGRADED', '9 of 10 tickers ok', 'What the silver rules did', 'Quality score', 'EURGBP=X'):
        assert text in nb and text in html, text
    assert 'start_run(' in nb and 'start_run(' not in html                  # the report hides the code
    assert '<img' in html                                                    # the plots are in it
    cells = nbformat.reads(nb, as_version=4).cells
    prices = next(c for c in cells if 'report_tickers(' in c.source)         # a price/indicator chart for each of 3 tickers worth a look
    assert sum('image/png' in o.get('data', {}) for o in prices.outputs) == 3 and '4. Prices' in html
    drift = next(c for c in cells if 'drifting_tickers(' in c.source)         # the drift summary: shares per feature, then the tickers
    assert sum('image/png' in o.get('data', {}) for o in drift.outputs) == 1 and 'Tickers drifting: <strong>' in html


def test_no_secret_lands_in_any_file(first_run):
    ini, p = first_run
    files = [f for d in ('runs', 'reports', 'data') for f in (ini.parent/d).rglob('*') if f.is_file()]
    assert len(files) > 30
    for f in files:
        blob = f.read_bytes()
        for value in SECRETS.values():
            for part in (value, value.split(':')[2].split('@')[0] if value.startswith('postgresql') else value):
                assert part.encode() not in blob, f"secret found in {f}"


def test_rerunning_the_same_date_changes_no_table(first_run):
    ini, p = first_run
    st = Store(ini.parent/'data')
    before, export = load_features(settings=load_settings(ini, env={})), pd.read_parquet(st.root/'export'/'1d'/'features_dataset.parquet')
    again = run_cli('run', '--settings', ini, '--date', '2024-06-28')
    assert again.returncode == 0, again.stdout + again.stderr
    m, _ = manifest_of(again.stdout)
    assert m['rows']['bars_added'] == 0 and m['rows']['values_changed'] == 0
    same = ('bronze/1d', 'silver/1d', 'rejects/1d', 'gold/1d')
    assert {k: m['versions']['read'][k] for k in same} == {k: m['versions']['written'][k] for k in same}   # not a single commit
    pd.testing.assert_frame_equal(load_features(settings=load_settings(ini, env={})), before)
    pd.testing.assert_frame_equal(pd.read_parquet(st.root/'export'/'1d'/'features_dataset.parquet'), export)


def test_status_lists_the_runs(first_run):
    ini, p = first_run
    out = run_cli('status', '--settings', ini, check=0).stdout
    assert 'degraded' in out and '2024-06-28' in out and 'EURGBP=X' in out


def test_failure_share_over_the_limit_fails_the_run(tmp_path):
    ini = write_ini(tmp_path/'strict', run__max_failure_share='0.05')
    p = run_cli('run', '--settings', ini, '--date', '2024-06-28')
    assert p.returncode == 1
    assert 'FAILED, 9 of 10 tickers ok' in p.stdout and 'reason: 10.0% of tickers failed, more than [run] max_failure_share = 5%' in p.stdout
    assert 'error: RunFailed' in p.stdout
    m, _ = manifest_of(p.stdout)
    assert m['status'] == 'failed'
    html = (ini.parent/'reports'/f"{m['run_id']}.html").read_text()
    assert 'RunFailed' in html                                              # the report shows why


def test_bad_parameters_fail_cleanly(tmp_path):
    ini = write_ini(tmp_path/'bad')
    p = run_cli('run', '--settings', ini, '--date', '2999-01-01', check=2)
    assert 'run date 2999-01-01 is in the future' in p.stderr
    p = run_cli('run', '--settings', ini, '--tickers', 'lower.ns', check=2)
    assert "--tickers 'lower.ns'" in p.stderr


def test_two_runs_at_once_do_not_interleave(tmp_path):
    ini = write_ini(tmp_path/'pair', storage__lock_timeout_seconds='300', universe__tickers='TCS.NS INFY.NS AAPL USDINR=X', quality__min_rows='100')
    cmd = [*CLI, 'run', '--settings', str(ini), '--date', '2024-06-28']
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    assert [o[0] for o in outs] == [0, 0], outs
    events = [l.split(' by pid ') for l in (ini.parent/'data'/'logs'/'pipeline.log').read_text().splitlines() if ' by pid ' in l]
    kinds, pids = [e[0].split()[-1] for e in events], [e[1] for e in events]
    assert kinds == ['acquired', 'released', 'acquired', 'released'] and pids[0] == pids[1] != pids[2] == pids[3]
    added = sorted(manifest_of(o[1])[0]['rows']['bars_added'] for o in outs)
    assert added[0] == 0 and added[1] > 0                                   # the second saw the first's data, whole


def test_intraday_run_uses_its_own_layers_and_tz_aware_stamps(tmp_path):
    ini = write_ini(tmp_path/'intra', universe__tickers='TCS.NS INFY.NS AAPL USDINR=X', source__synthetic_faults='', source__intraday_days='10')
    p = run_cli('run', '--settings', ini, '--date', '2024-06-28', '--interval', '15m')
    assert p.returncode == 0, p.stdout + p.stderr
    st = Store(ini.parent/'data')
    assert st.tickers('gold', '15m') == ['AAPL', 'INFY.NS', 'TCS.NS', 'USDINR=X'] and st.tickers('gold', '1d') == []
    assert st.tickers('bronze', '1d') == ['USDINR=X']                      # daily FX for the USD conversion
    read = lambda layer, t: st.read(layer, '15m', pl.col('ticker') == t).sort('date').to_pandas()
    g = read('gold', 'TCS.NS')
    assert str(g.date.dt.tz) == 'UTC' and g.date.dt.tz_convert('Asia/Kolkata').dt.strftime('%H:%M').min() >= '09:15'
    silver = read('silver', 'TCS.NS')
    assert np.allclose(g.sma_20.to_numpy(), silver.close.rolling(20).mean().to_numpy()[-len(g):])   # windows count bars
    aapl = read('gold', 'AAPL')
    assert aapl.date.dt.tz_convert('America/New_York').dt.strftime('%H:%M').min() >= '09:30' and (aapl.currency == 'USD').all() and (aapl.fx_rate > 50).all()
    cfg = load_settings(ini, env={})
    df = load_features(['TCS.NS'], start='2024-06-28', end='2024-06-28', interval='15m', settings=cfg)
    assert str(df.date.dt.tz) == 'UTC' and len(df) == 25                  # 09:15-15:15 IST: 25 bars on the day
