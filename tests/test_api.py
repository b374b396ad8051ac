"""The REST API through real HTTP: `stock-nbs serve` (uvicorn) started by the test on a free port, spoken to with httpx."""
import io, os, shutil, socket, subprocess, sys, time
from pathlib import Path
import pandas as pd, polars as pl, pyarrow as pa
import httpx
import pytest
from conftest import CLI, run_cli
from stock_nbs import load_features
from stock_nbs.config import load_settings

KEY = 'test-key-8f3a2c'


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def wait_up(url, seconds=20):
    "`url` once its /health answers (a server started by the test takes a moment)."
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            if httpx.get(f'{url}/health').status_code == 200: return url
        except httpx.TransportError: time.sleep(0.05)
    raise AssertionError(f'{url} did not come up in {seconds} s')


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    "A data root after one daily run, served by `stock-nbs serve` on 127.0.0.1."
    root = tmp_path_factory.mktemp('api')
    ini = root/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS AAPL USDINR=X\n[source]\nkind = synthetic\nstart = 2023-01-01\n"
                   "[quality]\nmin_rows = 100\n[storage]\ndata_dir = data\n")
    run_cli('run', '--settings', ini, '--date', '2024-06-28', check=0)
    port = free_port()
    env = {**os.environ, 'STOCK_NBS_API_KEYS': f'other-key,{KEY}', 'DATABASE_URL': 'postgresql://u:Db-s3cret-pw@127.0.0.1:1/x'}
    p = subprocess.Popen([*CLI, 'serve', '--settings', str(ini), '--port', str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = wait_up(f'http://127.0.0.1:{port}')
    yield url, load_settings(ini, env={}), p
    p.terminate(); p.wait(10)


def get(url, path, key=KEY, headers=None, **kw):
    return httpx.get(url + path, headers=({'X-API-Key': key} if key else {}) | (headers or {}), timeout=30, **kw)


def test_health_is_open_and_everything_else_needs_a_key(server):
    url, cfg, p = server
    assert get(url, '/health', key=None).json() == {'status': 'ok'}
    for path in ('/tickers', '/features', '/runs', '/mlops/system-health', '/mlops/pipeline-metrics', '/mlops/data-quality/TCS.NS'):
        assert get(url, path, key=None).status_code == 401, path
        assert get(url, path, key='wrong').status_code == 401, path
    assert get(url, '/tickers').status_code == 200 and get(url, '/tickers', key='other-key').status_code == 200


def test_features_pages_equal_load_features_as_json_csv_and_arrow(server):
    url, cfg, p = server
    want = load_features(settings=cfg, engine='polars')                          # the whole dataset, every column
    params = {'limit': 500}
    pages, cursor = [], None
    while True:                                                                   # Arrow pages, cursor by cursor
        r = get(url, '/features', params=params | ({'cursor': cursor} if cursor else {}), headers={'Accept': 'application/vnd.apache.arrow.stream'})
        assert r.status_code == 200 and r.headers['content-type'] == 'application/vnd.apache.arrow.stream'
        pages.append(pl.from_arrow(pa.ipc.open_stream(r.content).read_all()))
        cursor = r.headers.get('x-next-cursor')
        if not cursor: break
    got = pl.concat(pages)
    assert got.select('ticker', 'date').is_duplicated().sum() == 0             # every row once, to the bit
    assert len(pages) == -(-len(want) // 500) and got.equals(want)
    some = {'tickers': 'TCS.NS,AAPL', 'start': '2024-01-01', 'columns': 'close,rsi_14,macd', 'limit': 100000}
    part = load_features(['TCS.NS', 'AAPL'], start='2024-01-01', columns=['close', 'rsi_14', 'macd'], settings=cfg)
    js = get(url, '/features', params=some).json()
    assert js['count'] == len(part) and js['next_cursor'] is None and js['rows'][0]['ticker'] == 'AAPL' and list(js['rows'][0]) == list(part.columns)
    csv = pd.read_csv(io.StringIO(get(url, '/features', params=some, headers={'Accept': 'text/csv'}).text))
    assert list(csv.columns) == ['ticker', 'date', 'close', 'rsi_14', 'macd'] and len(csv) == len(part)


def test_bad_parameters_get_422_naming_them_and_unknown_tickers_404(server):
    url, cfg, p = server
    r = get(url, '/features', params={'start': '28/06/2024'})
    assert r.status_code == 422 and 'start' in r.json()['detail']
    r = get(url, '/features', params={'limit': 10**7})
    assert r.status_code == 422 and 'limit' in str(r.json()['detail'])
    r = get(url, '/features', params={'columns': 'close,rsi_99'})
    assert r.status_code == 422 and 'rsi_99' in r.json()['detail']
    r = get(url, '/features', params={'cursor': 'not-ours'})
    assert r.status_code == 422 and 'cursor' in r.json()['detail']
    r = get(url, '/features', params={'tickers': 'tcs.ns'})
    assert r.status_code == 404 and 'did you mean TCS.NS' in r.json()['detail']
    assert get(url, '/mlops/data-quality/NOPE.NS').status_code == 404 and get(url, '/runs/nope').status_code == 404


def test_runs_quality_drift_and_health_come_from_the_run(server):
    url, cfg, p = server
    runs = get(url, '/runs').json()['runs']
    assert len(runs) == 1 and runs[0]['run_date'] == '2024-06-28'
    one = get(url, f"/runs/{runs[0]['run_id']}").json()
    assert one['manifest']['run_id'] == runs[0]['run_id'] and one['report'] == f"/runs/{runs[0]['run_id']}/report"
    assert '<html' in get(url, one['report']).text and get(url, one['report'], key=None).status_code == 401
    q = get(url, '/mlops/data-quality/TCS.NS').json()
    assert q['ticker'] == 'TCS.NS' and 0 <= q['quality_score'] <= 100
    d = get(url, '/mlops/drift-detection/TCS.NS').json()
    assert d['ticker'] == 'TCS.NS' and d['recommendation'] in ('ok', 'watch', 'retrain') and {t['feature'] for t in d['tests']} >= {'daily_return', 'rsi_14'}
    h = get(url, '/mlops/system-health').json()
    assert h['last_run']['run_id'] == runs[0]['run_id'] and h['database'].startswith('unreachable: cannot connect to postgresql://u@127.0.0.1:1/x') and 0 <= h['health_score'] <= 100
    m = get(url, '/mlops/pipeline-metrics').json()
    assert m['runs'] == 1 and m['success_rate'] > 0 and m['gold_rows'] > 0
    t = get(url, '/tickers').json()['tickers']
    assert [x['ticker'] for x in t] == ['AAPL', 'INFY.NS', 'TCS.NS', 'USDINR=X']
    cut = Path(cfg.run.runs_dir)/'20240101T000000Z_1d_2024-01-01_dead'/'manifest.json'   # cut short by hand (the pipeline writes them atomically)
    cut.parent.mkdir(); cut.write_text('{"run_id": "2024')
    try:
        r = get(url, '/runs/20240101T000000Z_1d_2024-01-01_dead')
        assert r.status_code == 500 and 'unreadable' in r.json()['detail'] and "delete the run's folder" in r.json()['detail'], r.text
        assert [x['run_id'] for x in get(url, '/runs').json()['runs']] == [runs[0]['run_id']]   # the others are still listed
    finally: shutil.rmtree(cut.parent)


def test_serve_refuses_a_busy_port_and_warns_without_keys(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        r = run_cli('serve', '--port', s.getsockname()[1], check=2)
    assert 'cannot listen on 127.0.0.1' in r.stderr and 'no API key configured' in r.stderr


def test_a_run_started_over_http_runs_once_and_is_polled_to_its_end(server):
    url, cfg, p = server
    post = lambda body: httpx.post(url + '/run-pipeline', json=body, headers={'X-API-Key': KEY}, timeout=30)
    assert post({'run_date': '2999-01-01'}).status_code == 422 and 'run_date' in post({'run_date': '2999-01-01'}).text
    assert post({'tickers': ['tcs.ns']}).status_code == 422
    first = post({'run_date': '2024-07-01'})
    assert first.status_code == 202
    run_id = first.json()['run_id']
    second = post({})
    assert second.status_code == 409 and second.json()['detail']['running'] == run_id       # one run at a time, and which one
    for _ in range(300):
        r = get(url, f'/runs/{run_id}')
        if r.status_code == 200 and 'manifest' in r.json(): break
        assert r.status_code == 200 and r.json()['status'] == 'running'
        time.sleep(0.2)
    m = r.json()['manifest']
    assert m['run_id'] == run_id and m['status'] == 'ok' and m['parameters']['run_date'] == '2024-07-01'
    assert run_id in [x['run_id'] for x in get(url, '/runs').json()['runs']]
    day1 = next(x['run_id'] for x in get(url, '/runs').json()['runs'] if x['run_date'] == '2024-06-28')     # as_of: the dataset as day 1 left it
    past = get(url, '/features', params={'tickers': 'TCS.NS', 'as_of': day1, 'limit': 100000}).json()
    assert past['count'] == len(load_features('TCS.NS', as_of=day1, settings=cfg)) and past['rows'][-1]['date'].startswith('2024-06-28')
    assert get(url, '/features', params={'tickers': 'TCS.NS', 'limit': 100000}).json()['rows'][-1]['date'].startswith('2024-07-01')
    r = get(url, '/features', params={'as_of': '2001-01-01'})
    assert r.status_code == 422 and 'had no version at 2001-01-01 00:00:00 UTC' in r.json()['detail']


def test_docs_work_offline_latest_says_what_to_do_and_bodies_are_bounded(server):
    url, cfg, p = server
    docs = get(url, '/docs', key=None).text
    assert '/docs-assets/swagger-ui-bundle.js' in docs and 'cdn' not in docs
    assert get(url, '/docs-assets/swagger-ui-bundle.js', key=None).status_code == 200
    latest = get(url, '/supabase/latest')                                       # the configured database is down
    assert latest.status_code == 503 and 'stock-nbs db migrate' in latest.text and 'Db-s3cret-pw' not in latest.text
    assert get(url, '/mlops/system-health').json()['database'].startswith('unreachable')
    big = httpx.post(url + '/run-pipeline', content=b'{' + b' ' * 100_000 + b'}', headers={'X-API-Key': KEY, 'Content-Type': 'application/json'})
    assert big.status_code == 413


def test_no_secret_in_any_response_or_the_server_log_and_it_says_where_it_listens(server):
    "(It stops the module's server to read its output: the tests after it start their own.)"
    url, cfg, p = server
    bodies = [get(url, path).text for path in ('/mlops/system-health', '/runs', '/mlops/pipeline-metrics', '/openapi.json')]
    bodies += [get(url, '/features', params={'tickers': 'TCS.NS'}, key='wrong').text]
    assert not any(s in b for b in bodies for s in ('Db-s3cret-pw', KEY, 'other-key'))
    p.terminate(); out, err = p.communicate(timeout=10)
    assert 'http://127.0.0.1:' in out and 'this machine only' in out
    assert not any(s in out + err for s in ('Db-s3cret-pw', KEY, 'other-key'))


def test_latest_comes_from_the_database_when_one_is_configured(server, tmp_path, pg_url):
    url0, cfg, p0 = server
    from stock_nbs.config import Secrets
    from stock_nbs.sync import sync
    sync(cfg, Secrets({'DATABASE_URL': pg_url}))
    port = free_port()
    p = subprocess.Popen([*CLI, 'serve', '--settings', str(cfg.path), '--port', str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'STOCK_NBS_API_KEYS': KEY, 'DATABASE_URL': pg_url})
    try:
        wait_up(f'http://127.0.0.1:{port}')
        latest = get(f'http://127.0.0.1:{port}', '/supabase/latest').json()
        local = load_features(settings=cfg).sort_values('date').groupby('ticker').tail(1).sort_values('ticker')
        assert latest['source'] == 'database' and [r['ticker'] for r in latest['rows']] == local.ticker.tolist()
        assert [r['date'] for r in latest['rows']] == [d.strftime('%Y-%m-%d') for d in local.date]
        assert get(f'http://127.0.0.1:{port}', '/mlops/system-health').json()['database'] == 'ok'
    finally:
        p.terminate(); p.wait(10)
