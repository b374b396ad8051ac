"""`stock-nbs` as a user runs it: summaries, exit codes, messages without tracebacks."""
import pandas as pd
import pytest
from conftest import run_cli
from stock_nbs.store import Store


@pytest.fixture
def ini(write_settings, tmp_path):
    return write_settings({'universe': {'tickers': 'TCS.NS INFY.NS AAPL USDINR=X'},
                           'source': {'kind': 'synthetic', 'start': '2024-01-01'},
                           'storage': {'data_dir': 'data'}})


def test_ingest_prints_summary_and_where_data_went(ini):
    p = run_cli('ingest', '--settings', ini, '--date', '2024-03-29', check=0)
    assert 'ingest 1d up to 2024-03-29 from synthetic: 4 tickers, 4 updated, 0 unchanged, 0 failed (0.0%)' in p.stdout
    assert f"bronze table: {ini.parent/'data'/'bronze'/'1d'}" in p.stdout
    assert f"log: {ini.parent/'data'/'logs'/'pipeline.log'}" in p.stdout
    assert Store(ini.parent/'data').tickers('bronze', '1d') == ['AAPL', 'INFY.NS', 'TCS.NS', 'USDINR=X']


def test_tickers_source_and_env_var_settings(ini, tmp_path):
    p = run_cli('ingest', '--tickers', 'TCS.NS,AAPL', '--date', '2024-03-29', env={'STOCK_NBS_SETTINGS': str(ini)}, cwd='/', check=0)
    assert '3 tickers, 3 updated' in p.stdout                             # AAPL's FX series comes with it
    assert Store(ini.parent/'data').tickers('bronze', '1d') == ['AAPL', 'TCS.NS', 'USDINR=X']


def test_failure_share_over_the_limit_exits_1(write_settings, tmp_path):
    vendor = tmp_path/'vendor'; vendor.mkdir()
    pd.DataFrame({'Date': ['2024-01-02'], 'Open': [1], 'High': [1], 'Low': [1], 'Close': [1], 'Volume': [1]}).to_csv(vendor/'TCS.NS.csv', index=False)
    ini = write_settings({'universe': {'tickers': 'TCS.NS INFY.NS WIPRO.NS'},
                          'source': {'kind': 'csv', 'csv_dir': str(vendor), 'start': '2024-01-01'},
                          'run': {'max_failure_share': '0.5'}, 'storage': {'data_dir': 'data'}})
    p = run_cli('ingest', '--settings', ini, '--date', '2024-01-05', check=1)
    assert '1 updated, 0 unchanged, 2 failed (66.7%)' in p.stdout
    assert f"FAILED INFY.NS: INFY.NS: no file {vendor}/INFY.NS.csv" in p.stdout
    assert 'error: 66.7% of tickers failed, more than [run] max_failure_share = 50%' in p.stderr
    run_cli('ingest', '--settings', ini, '--date', '2024-01-05', '--tickers', 'TCS.NS,INFY.NS', env={'STOCK_NBS__RUN__MAX_FAILURE_SHARE': '0.5'}, check=0)


@pytest.mark.parametrize('args,env,message', [
    (['--date', '2024-02-30'], {}, "--date '2024-02-30' is not a date; use YYYY-MM-DD"),
    (['--tickers', 'TCS.NS,tcs'], {}, "--tickers 'TCS.NS,tcs': not a Yahoo ticker (upper case, suffix .NS, .BO, =X or none for US): tcs"),
    ([], {'STOCK_NBS__SOURCE__KIND': 'quandl'}, "[source] kind = 'quandl' (STOCK_NBS__SOURCE__KIND): accepted values: yahoo, csv, synthetic"),
    ([], {'STOCK_NBS__STORAGE__DATA_DIR': '/proc/nope'}, 'data root /proc/nope is not writable'),
    (['--source', 'csv'], {}, 'CSV folder'),
])
def test_bad_input_exits_2_with_one_clear_line(ini, args, env, message):
    p = run_cli('ingest', '--settings', ini, *args, env=env, check=2)
    assert message in p.stderr and 'Traceback' not in p.stderr


def test_unknown_source_kind_on_the_command_line(ini):
    p = run_cli('ingest', '--settings', ini, '--source', 'quandl', check=2)
    assert "invalid choice: 'quandl'" in p.stderr


def test_settings_command_shows_values_and_origins(ini):
    p = run_cli('settings', '--settings', ini, env={'STOCK_NBS__SOURCE__OVERLAP_SESSIONS': '9'}, check=0)
    assert f'kind = synthetic    ; from {ini}' in p.stdout
    assert 'overlap_sessions = 9    ; from STOCK_NBS__SOURCE__OVERLAP_SESSIONS' in p.stdout
    assert 'export_parquet = true    ; from default' in p.stdout


def test_settings_command_prints_ini_that_reads_back_to_the_same_values(ini, tmp_path):
    p = run_cli('settings', '--settings', ini, check=0)
    assert '{}' not in p.stdout and "('" not in p.stdout and '= None' not in p.stdout   # INI syntax, not Python values
    (tmp_path/'printed.ini').write_text(p.stdout)                                     # its `; from` notes are INI comments
    from stock_nbs.config import load_settings
    assert load_settings(tmp_path/'printed.ini', env={}).values == load_settings(ini, env={}).values
