"""JupyterLab as the quant meets it: `stock-nbs lab`'s server, the quickstart opened in headless Chromium, Run All, no cell errored."""
import shutil, subprocess, sys
import nbformat
from conftest import REPO
from stock_nbs.cli import lab_command
from stock_nbs.config import load_settings
sys.path.insert(0, str(REPO/'tools'))
from dashboard_probe import CHROMIUM, ARGS, free_port, listening, stop

PROMPT_SHOWS_A_RUN = "() => [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')].some(e => /\\[(\\*|\\d+)\\]/.test(e.textContent))"


def test_the_quickstart_runs_in_jupyterlab_without_an_error(tmp_path):
    from playwright.sync_api import sync_playwright
    shutil.copytree(REPO/'nbs'/'tutorials', tmp_path/'tutorials')   # a copy: Lab saves the run's outputs into it
    port = free_port()
    cmd, env, url = lab_command(load_settings(None, env={}), tmp_path, port, browser=False)
    cmd.append('--expose-app-in-browser')   # window.jupyterapp: Run All through Lab's command registry, as JupyterLab's own Galata tests drive it
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
            kernel = "() => window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status ?? 'no kernel'"
            pg.wait_for_function(f"() => ({kernel})() === 'idle'", timeout=120_000)
            pg.evaluate("""() => { window.runAll = 'running'; window.jupyterapp.commands.execute('notebook:run-all-cells')
                                        .then(r => window.runAll = `done: ${r}`, e => window.runAll = `failed: ${e}`); }""")
            try: pg.wait_for_function(PROMPT_SHOWS_A_RUN, timeout=30_000)
            except Exception as e:                                          # say what the page showed, not just that it timed out
                pg.screenshot(path=str(REPO/'reports'/'lab_run_all_not_started.png'))
                raise AssertionError(f"Run All did not start (the command: {pg.evaluate('() => window.runAll')!r}, kernel {pg.evaluate(kernel)!r}, "
                                     f"current widget {pg.evaluate('() => window.jupyterapp.shell.currentWidget?.title.label')!r}, "
                                     f"dialogs {pg.eval_on_selector_all('.jp-Dialog', 'els => els.map(e => e.innerText)')!r}); "
                                     f"screenshot reports/lab_run_all_not_started.png") from e
            pg.wait_for_function("""() => { const p = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')];
                                            return p.length && p.every(e => /^\\[\\d+\\]:$/.test(e.textContent.trim())); }""", timeout=300_000)
            pg.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")   # resolves once written
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
