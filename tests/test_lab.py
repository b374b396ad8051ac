"""JupyterLab as the quant meets it: `stock-nbs lab`'s server, the quickstart opened in headless Chromium, Run All, no cell errored."""
import shutil, subprocess, sys
import nbformat
from conftest import REPO
from stock_nbs.cli import lab_command
from stock_nbs.config import load_settings
sys.path.insert(0, str(REPO/'tools'))
from dashboard_probe import CHROMIUM, ARGS, free_port, listening, stop


def test_the_quickstart_runs_in_jupyterlab_without_an_error(tmp_path):
    from playwright.sync_api import sync_playwright
    shutil.copytree(REPO/'nbs'/'tutorials', tmp_path/'tutorials')   # a copy: Lab saves the run's outputs into it
    port = free_port()
    cmd, env, url = lab_command(load_settings(None, env={}), tmp_path, port, browser=False)
    log = tmp_path/'lab.log'
    server = subprocess.Popen(cmd, env=env, stdout=log.open('w'), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        listening(port, server, log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            pg = browser.new_page(viewport={'width': 1400, 'height': 1000})
            errors = []
            pg.on('pageerror', lambda e: errors.append(str(e)))
            pg.goto(url.replace('/lab?', '/lab/tree/tutorials/quickstart.ipynb?'), timeout=120_000)
            pg.wait_for_selector('.jp-Notebook .jp-CodeCell', timeout=120_000)
            pg.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)   # the venv's kernel is up
            pg.click('.jp-Notebook .jp-Cell >> nth=0')                       # the notebook has the focus, so its commands are enabled
            pg.click('.lm-MenuBar-itemLabel:text-is("Run")')
            pg.locator('.lm-Menu-item:not(.lm-mod-disabled)', has=pg.locator('.lm-Menu-itemLabel:text-is("Run All Cells")')).click()
            pg.wait_for_function("() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))",
                                 timeout=30_000)                                 # it started
            pg.wait_for_function("""() => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
                                            return p.length && p.every(e => /^\\[\\d+\\]:$/.test(e.textContent.trim())); }""", timeout=300_000)
            pg.keyboard.press('Control+s'); pg.wait_for_timeout(2000)
            plot = pg.locator('.jp-OutputArea-output img').first
            plot.scroll_into_view_if_needed(); plot.screenshot(path=str(REPO/'reports'/'quickstart_plot.png'))
            browser.close()
        nb = nbformat.read(tmp_path/'tutorials'/'quickstart.ipynb', as_version=4)
        code = [c for c in nb.cells if c.cell_type == 'code']
        assert all(c.execution_count for c in code), 'a cell did not run'
        failed = [(i, o.get('ename'), o.get('evalue')) for i, c in enumerate(code) for o in c.outputs if o.output_type == 'error']
        assert failed == [], failed
        assert sum('image/png' in o.get('data', {}) for c in code for o in c.outputs) >= 1 and errors == [], errors
    finally:
        stop(server)
        print(log.read_text()[-1500:])
