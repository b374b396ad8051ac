"""The dashboard as a user meets it: `stock-nbs dashboard`'s Voila, pages in headless Chromium, a screenshot of each panel.

Used by tests/test_dashboard.py (76 tickers) and `make bench` (5,000 tickers)."""
import os, signal, socket, subprocess, time
from pathlib import Path

CHROMIUM = '/usr/bin/chromium'   # Debian's: Playwright's own browser download cannot work offline
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']
PANELS = ('health', 'quality', 'drift', 'explore')
PANEL_CHART = '[class*="panel-"] .js-plotly-plot'   # a panel's chart, not the empty figure the dashboard sends first to start plotly.js
FIRST_CHART = """window.firstChartMs = null;
new MutationObserver((_, watch) => {
  if (document.querySelector('%s .main-svg')) { window.firstChartMs = performance.now(); watch.disconnect(); }
}).observe(document, {subtree: true, childList: true});""" % PANEL_CHART


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start(settings, log: Path, idle_kernel_s=300):
    "Voila serving the dashboard for `settings`, its output in `log` (a pipe nobody reads fills up and stalls it); (url, process)."
    from stock_nbs.cli import dashboard_command
    port = free_port()
    cmd, env = dashboard_command(settings, port, idle_kernel_s=idle_kernel_s)
    proc = subprocess.Popen(cmd, env=env, stdout=log.open('w'), stderr=subprocess.STDOUT, text=True, start_new_session=True)
    listening(port, proc, log)   # (a GET / would execute the whole notebook once just to probe)
    return f'http://127.0.0.1:{port}/', proc


def listening(port: int, proc, log: Path, seconds=90):
    "Wait until the server `proc` accepts connections on `port`; kill it and raise with the end of its `log` if it does not."
    for _ in range(seconds * 4):
        try: socket.create_connection(('127.0.0.1', port), timeout=1).close(); return
        except OSError: time.sleep(0.25)
    proc.kill(); raise RuntimeError(f'the server did not listen within {seconds} s:\n' + log.read_text()[-3000:])


def stop(proc):
    "Stop the server and the kernels it started."
    os.killpg(proc.pid, signal.SIGTERM); proc.wait(timeout=30)


def timed(page):
    "`page`, noting when its first chart appears by its own clock (from its navigation start): what its user sees, without the driver's polling lag."
    page.add_init_script(FIRST_CHART)
    return page


def load(page, url, timeout_s=120) -> float:
    "Open the dashboard in `page` until every panel with a chart has drawn it; seconds to the first chart."
    timed(page).goto(url, wait_until='commit', timeout=timeout_s * 1000)
    return drawn(page, timeout_s)


def drawn(page, timeout_s=120) -> float:
    "Wait until every panel with a chart in the `timed` `page` has drawn it, and the quality table; seconds from its navigation to its first chart."
    for panel in ('health', 'drift', 'explore'): page.wait_for_selector(f'.panel-{panel} .js-plotly-plot', timeout=timeout_s * 1000)
    page.wait_for_selector('.panel-quality table', timeout=timeout_s * 1000)
    return page.evaluate('() => window.firstChartMs') / 1000


def shoot(page, folder: Path, prefix: str) -> list:
    "Screenshots of the whole page and of each panel as `<folder>/<prefix>_<panel>.png`; their paths."
    folder.mkdir(parents=True, exist_ok=True)
    shots = [folder/f'{prefix}_full.png']
    page.screenshot(path=str(shots[0]), full_page=True)
    for panel in PANELS:
        shots.append(folder/f'{prefix}_{panel}.png'); page.locator(f'.panel-{panel}').screenshot(path=str(shots[-1]))
    return shots
