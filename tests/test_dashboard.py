"""The Voila dashboard in a real headless Chromium: every panel renders offline, the ticker picker changes the chart."""
import re, shutil, subprocess, sys, time, urllib.request
import psutil
import pytest
from conftest import REPO, run_cli
from stock_nbs.config import load_settings
sys.path.insert(0, str(REPO/'tools'))
from dashboard_probe import CHROMIUM, ARGS, PANEL_CHART, start, stop, load, drawn, shoot, timed

SHOTS = REPO/'reports'/'dashboard'


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp('dash')
    ini = root/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS INFY.NS SBIN.NS AAPL USDINR=X EURGBP=X\n[source]\nkind = synthetic\nstart = 2023-01-01\n"
                   "synthetic_faults = nan spike placeholder\n[quality]\nmin_rows = 100\n[storage]\ndata_dir = data\n")   # EURGBP=X cannot be converted: it fails
    run_cli('run', '--settings', ini, '--date', '2024-06-28', check=0)
    url, proc = start(load_settings(ini, env={}), root/'voila.log')
    yield url, root, proc
    stop(proc)


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={'width': 1400, 'height': 1000})
        pg.on('pageerror', lambda e: errors.append(f'page error: {e}'))
        pg.on('console', lambda m: errors.append(f'console {m.type}: {m.text}') if m.type == 'error' else None)
        pg.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
        yield pg, errors
        browser.close()


WIDGET_STATE = """async () => {   // what the page's widget manager knows, and whether the kernel still has the models it lacks
    const m = window.jupyterapp && window.jupyterapp.widgetManager;
    if (!m) return 'no widget manager';
    const known = Object.keys(m._models);
    let inKernel = '?';
    try { const r = await m.kernel.requestCommInfo({target_name: 'jupyter.widget'}); inKernel = Object.keys(r.content.comms).length; } catch (e) { inKernel = `${e}`; }
    return `restored ${m.restoredStatus}, models known ${known.length}, widget comms in the kernel ${inKernel}, kernel ${m.kernel.status}/${m.kernel.connectionStatus}`;
}"""


def real_errors(errors):
    "Every error except the offline CDN request for fontawesome CSS (cosmetic)."
    return [e for e in errors if 'fontawesome' not in e.lower() and 'font-awesome' not in e.lower()
            and not re.search(r'console error: Failed to load resource: net::ERR_(NAME_NOT_RESOLVED|INTERNET_DISCONNECTED|CONNECTION_REFUSED)', e)]


def test_every_panel_renders_offline_and_the_ticker_picker_changes_the_chart(served, page):
    url, root, server = served
    pg, errors = page
    SHOTS.mkdir(parents=True, exist_ok=True)
    first_chart = load(pg, url)                                  # every panel with its chart, and the quality table
    text = pg.inner_text('body')
    assert 'Last run DEGRADED' in text and '5 of 6 tickers ok' in text and 'EURGBP=X' in text
    assert 'quality_score' in pg.inner_text('.panel-quality') and 'TCS.NS' in pg.inner_text('.panel-quality')
    assert 'Baseline:' in pg.inner_text('.panel-drift')
    links = pg.eval_on_selector_all('table.runs a', 'els => els.map(a => a.href)')   # each run's report and drift report, served beside the page
    assert len(links) == 2 and all(urllib.request.urlopen(h).read()[:15].lower() == b'<!doctype html>' for h in links), links
    title = lambda: pg.eval_on_selector('.panel-explore .js-plotly-plot',   # the trace as plotly.js holds it, and the price axis it drew
                                        'el => el._fullData[0].name + "|" + el._fullData[0].close.length + "|" + Array.from(el.querySelectorAll(".ytick text")).slice(0, 3).map(t => t.textContent).join(",")')
    before = title()
    assert before.startswith('AAPL|')
    box = pg.locator('.panel-explore input[list]')              # the ticker combobox (5,000 tickers: typed, not scrolled)
    box.fill('SBIN.NS'); box.press('Enter')
    pg.wait_for_function("() => { const el = document.querySelector('.panel-explore .js-plotly-plot'); return el && el.data && el.data[0].name === 'SBIN.NS'; }", timeout=60_000)
    after = title()
    assert after.startswith('SBIN.NS|') and after.split('|')[2] != before.split('|')[2]
    pg.locator('.panel-explore').screenshot(path=str(SHOTS/'dashboard_explore_sbin.png'))
    assert real_errors(errors) == [], real_errors(errors)
    print(f'first chart {first_chart:.1f} s after navigation')        # the 3 s target is measured, not asserted (make bench)


def test_thirty_fresh_loads_three_at_a_time_all_complete_half_of_them_beside_two_cpu_bound_processes(served):
    # Before the kernel channels polled in slices (stock_nbs.run.poll_in_slices), 8 of 20 single loads never finished. Before progressive
    # rendering, 16 of 45 pages loaded three at once lost their widgets to a race in the widgets front-end (see monitor.dashboard_app);
    # the server then ran one page at a time, which made it rarer (one load of 30, beside the burners, in 2 of 4 full test runs).
    from playwright.sync_api import sync_playwright
    url, root, server = served
    burners, timings = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for round_ in range(10):   # 15 loads three at a time on an idle machine, then 15 beside two CPU burners
                if round_ == 5: burners = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(2)]
                ctxs = [browser.new_context(viewport={'width': 1400, 'height': 1000}) for _ in range(3)]
                pages, errors = [timed(c.new_page()) for c in ctxs], [[] for _ in ctxs]
                for pg, errs in zip(pages, errors):
                    pg.on('pageerror', lambda e, errs=errs: errs.append(f'page error: {e}'))
                    pg.on('console', lambda m, errs=errs: errs.append(f'console {m.type}: {m.text}') if m.type == 'error' else None)
                t0 = time.monotonic()
                for pg in pages: pg.goto(url, wait_until='commit', timeout=60_000)   # fresh pages at once
                for i, (pg, errs) in enumerate(zip(pages, errors)):
                    load_no = round_ * 3 + i + 1
                    try: timings.append(drawn(pg, timeout_s=90))
                    except Exception as e:
                        pytest.fail(f"load {load_no} ({'busy' if burners else 'idle'} machine) incomplete after {time.monotonic() - t0:.0f} s: {e}; "
                                    f"browser errors: {real_errors(errs)}; widgets: {pg.evaluate(WIDGET_STATE)}; panel charts drawn: {pg.eval_on_selector_all(PANEL_CHART, 'els => els.length')}; "
                                    f"page end: {pg.inner_text('body')[-800:]!r}; server log end: {(root/'voila.log').read_text()[-1500:]}")
                    assert real_errors(errs) == [], (load_no, real_errors(errs))
                    assert 'error when executing cell' not in pg.inner_text('body')
                for c in ctxs: c.close()
        finally:
            for b in burners: b.kill()
            browser.close()
    idle, busy = sorted(timings[:15]), sorted(timings[15:])
    print(f"first chart, 3 pages at once (each from its navigation start), on an idle machine: median {idle[7]:.1f} s, max {idle[-1]:.1f} s; "
          f"beside two CPU-bound processes: median {busy[7]:.1f} s, max {busy[-1]:.1f} s")


def test_without_any_run_the_dashboard_says_what_to_run(tmp_path, page):
    ini = tmp_path/'settings.ini'
    ini.write_text("[universe]\ntickers = TCS.NS\n[storage]\ndata_dir = data\n")
    url, proc = start(load_settings(ini, env={}), tmp_path/'voila.log')
    try:
        pg, errors = page
        pg.goto(url, wait_until='commit', timeout=120_000)
        pg.wait_for_selector('.panel-explore', timeout=120_000)
        text = pg.inner_text('body')
        assert 'No run yet. Start one with stock-nbs run' in text and 'No gold data yet' in text and 'Traceback' not in text
        pg.screenshot(path=str(SHOTS/'dashboard_empty.png'), full_page=True)
        assert real_errors(errors) == [], real_errors(errors)
    finally:
        stop(proc)


def test_each_panel_at_the_default_76_tickers(tmp_path, page):
    shutil.copy(REPO/'settings.ini', tmp_path/'settings.ini')   # the README's universe, on the synthetic market
    run_cli('run', '--settings', tmp_path/'settings.ini', '--source', 'synthetic', '--date', '2024-06-28', check=0)
    settings = load_settings(tmp_path/'settings.ini', env={})
    n = len(settings.values['universe']['tickers'])
    url, proc = start(settings, tmp_path/'voila.log')
    try:
        pg, errors = page
        pg.set_viewport_size({'width': 1400, 'height': 1000})
        first = load(pg, url)
        assert f'{n} of {n} tickers ok' in pg.inner_text('.panel-health') and f'{n} of {n} tickers' in pg.inner_text('.panel-quality')
        assert pg.eval_on_selector_all('.panel-quality table tr', 'rows => rows.length') == n + 1     # a header and every ticker (under 200: all shown)
        shots = shoot(pg, SHOTS, f'{n}_tickers')
        assert all(f.stat().st_size > 5_000 for f in shots), shots
        assert real_errors(errors) == [], real_errors(errors)
        print(f'{n} tickers: first chart {first:.1f} s; screenshots {", ".join(f.name for f in shots)} in {SHOTS}')
    finally:
        stop(proc)


def test_a_closed_pages_kernel_is_stopped(served, page):
    # Voila's own shutdown on page close is refused (no _xsrf), so every load used to leave its ~165 MB kernel running.
    url, root, _ = served
    url, proc = start(load_settings(root/'settings.ini', env={}), root/'voila_cull.log', idle_kernel_s=3)
    def kernels():
        "The server's running kernels (a kernel just stopped may linger as a zombie until reaped: stopped all the same)."
        alive = []
        for c in psutil.Process(proc.pid).children(recursive=True):
            try:
                if c.status() != psutil.STATUS_ZOMBIE and 'ipykernel_launcher' in ' '.join(c.cmdline()): alive.append(c)
            except psutil.NoSuchProcess: pass   # ZombieProcess is one
        return alive
    try:
        pg, errors = page
        load(pg, url)
        assert len(kernels()) == 1
        pg.goto('about:blank')                      # the page is gone
        for _ in range(60):
            if not kernels(): break
            time.sleep(0.5)
        assert kernels() == [], f'{len(kernels())} kernel(s) of a closed page still running'
    finally:
        stop(proc)
