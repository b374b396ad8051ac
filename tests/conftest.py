"""Shared fixtures: repository paths, isolated environment, settings files written per test."""
import os, sys, subprocess
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parents[1]
UPSTOX = Path(os.environ.get('STOCK_NBS_UPSTOX_DIR', REPO.parent/'shared'/'data'/'nifty50_upstox'))
CLI = [str(Path(sys.executable).parent/'stock-nbs')]  # the console script a user runs


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    "No STOCK_NBS_* or secret variables leak in from the shell, and the working directory is a fresh folder."
    for k in list(os.environ):
        if k.startswith('STOCK_NBS') and k not in ('STOCK_NBS_UPSTOX_DIR', 'STOCK_NBS_TEST_DATABASE_URL') or k in ('DATABASE_URL', 'SUPABASE_URL', 'SUPABASE_KEY'):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_settings(tmp_path):
    "Write a settings.ini (sections as dicts) into a folder of tmp_path and return its path."
    def write(sections: dict, folder='cfg', name='settings.ini'):
        d = tmp_path/folder
        d.mkdir(parents=True, exist_ok=True)
        text = '\n'.join(f"[{s}]\n" + '\n'.join(f"{k} = {v}" for k, v in kv.items()) for s, kv in sections.items())
        (d/name).write_text(text + '\n')
        return d/name
    return write


@pytest.fixture(scope="session")
def upstox_dir():
    "The real Upstox vendor folder shipped in shared/data (the suite fails, not skips, without it)."
    assert UPSTOX.is_dir(), f"real vendor data missing at {UPSTOX}; set STOCK_NBS_UPSTOX_DIR to the nifty50_upstox folder"
    return UPSTOX


def run_cli(*args, env=None, cwd=None, check=None):
    "Run `python -m stock_nbs.cli` as a user would; returns the CompletedProcess."
    e = {k: v for k, v in os.environ.items()}
    e.update(env or {})
    p = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd, timeout=300)
    if check is not None: assert p.returncode == check, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    return p


@pytest.fixture
def pg_url():
    "URL of a fresh, empty database on the test server that `make test` starts (dropped afterwards)."
    admin = os.environ.get('STOCK_NBS_TEST_DATABASE_URL')
    if not admin:
        msg = 'no test database: run the suite through `make test`, which starts a throwaway PostgreSQL'
        if os.environ.get('CI') == 'true': pytest.fail(msg)
        pytest.skip(msg)
    import psycopg, uuid
    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as c: c.execute(f'CREATE DATABASE {name}')
    yield admin.rsplit('/', 1)[0] + '/' + name
    with psycopg.connect(admin, autocommit=True) as c: c.execute(f'DROP DATABASE {name} WITH (FORCE)')


def pytest_collection_modifyitems(config, items):
    "The dashboard's file first (its browser tests are the longest): under `make test`'s two workers one runs it while the other takes the rest."
    items.sort(key=lambda item: item.path.name != 'test_dashboard.py')  # (a stable sort: every other test keeps its place)
