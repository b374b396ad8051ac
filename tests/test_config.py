"""Settings: the shipped file, finding the file, overrides, validation messages, secrets."""
import configparser, datetime as dt, re
from pathlib import Path
import pytest
from stock_nbs.config import (SPEC, ConfigError, load_settings, load_secrets, find_settings, market_of, env_name)
from conftest import REPO


def test_shipped_settings_documents_every_key_with_its_default():
    text = (REPO/'settings.ini').read_text()
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    for sec, keys in SPEC.items():
        for k, key in keys.items():
            assert cp.has_option(sec, k), f"settings.ini lacks [{sec}] {k}"
            assert key.parse(cp[sec][k].strip()) == key.parse(key.default.strip()), f"[{sec}] {k} differs from its default"
            before = text[:text.index(f"\n{k} =")].rstrip().splitlines()[-1]
            assert before.startswith('#'), f"[{sec}] {k} has no comment documenting it"


def test_default_universe():
    s = load_settings(REPO/'settings.ini', env={})
    t = s.universe.tickers
    nse = [x for x in t if x.endswith('.NS')]
    us = [x for x in t if market_of(x).currency == 'USD' and not x.endswith('=X')]
    assert len(nse) >= 60 and len(us) >= 3 and 'USDINR=X' in t
    assert {'TCS.NS', 'INFY.NS', 'WIPRO.NS', 'SBIN.NS', 'ONGC.NS', 'NTPC.NS', 'RELIANCE.NS', 'HDFCBANK.NS'} <= set(nse)
    assert s.source.kind == 'yahoo' and s.source.csv_pattern == '{ticker}.csv'
    assert s.data_dir == REPO/'data'


def test_settings_file_by_argument_env_var_and_search(write_settings, tmp_path):
    a = write_settings({'universe': {'tickers': 'TCS.NS'}}, 'a')
    b = write_settings({'universe': {'tickers': 'INFY.NS'}}, 'b')
    assert find_settings(a, env={'STOCK_NBS_SETTINGS': str(b)}) == a          # --settings wins
    assert find_settings(None, env={'STOCK_NBS_SETTINGS': str(b)}) == b       # then the env var
    deep = tmp_path/'a'/'x'/'y'; deep.mkdir(parents=True)
    assert find_settings(None, env={}, cwd=deep) == a                         # then walking up
    with pytest.raises(ConfigError, match=r'does not exist.*STOCK_NBS_SETTINGS'):
        find_settings(None, env={'STOCK_NBS_SETTINGS': str(tmp_path/'nope.ini')})


def test_relative_paths_resolve_against_the_settings_folder(write_settings, tmp_path, monkeypatch):
    p = write_settings({'universe': {'tickers': 'TCS.NS'}, 'source': {'csv_dir': '../vendor'}, 'storage': {'data_dir': 'store'}}, 'conf')
    monkeypatch.chdir('/')
    s = load_settings(p, env={})
    assert s.source.csv_dir == (tmp_path/'vendor').resolve()
    assert s.data_dir == (tmp_path/'conf'/'store').resolve()


def test_environment_overrides_file_and_command_line_overrides_environment(write_settings):
    p = write_settings({'universe': {'tickers': 'TCS.NS'}, 'source': {'kind': 'csv', 'overlap_sessions': '3'}})
    s = load_settings(p, env={env_name('source.kind'): 'synthetic', 'STOCK_NBS__SOURCE__OVERLAP_SESSIONS': '7'})
    assert (s.source.kind, s.source.overlap_sessions) == ('synthetic', 7)
    s = load_settings(p, env={env_name('source.kind'): 'synthetic'}, overrides={'source.kind': 'yahoo'})
    assert s.source.kind == 'yahoo' and s.origins['source.kind'] == 'command line'


@pytest.mark.parametrize('section,key,value,expected', [
    ('source', 'kind', 'quandl', 'accepted values: yahoo, csv, synthetic'),
    ('source', 'start', '01/02/2024', 'expected a date as YYYY-MM-DD'),
    ('source', 'interval', '7m', 'accepted values: 1m'),
    ('source', 'overlap_sessions', 'five', 'expected an integer'),
    ('source', 'overlap_sessions', '-2', 'between 0 and 250'),
    ('source', 'csv_pattern', 'prices.csv', 'must contain {ticker} or {symbol}'),
    ('source', 'csv_columns', 'timestamp', 'expected vendor=field pairs'),
    ('source', 'synthetic_faults', 'gremlins', 'unknown fault gremlins'),
    ('storage', 'export_parquet', 'maybe', 'accepted values: true, false'),
    ('run', 'max_failure_share', '1.5', 'between 0 and 1'),
    ('universe', 'tickers', 'TCS.NS VOD.L', 'VOD.L'),
    ('universe', 'tickers', '', 'at least one ticker'),
    ('universe', 'base_currency', 'EUR', 'accepted values: INR'),
])
def test_bad_values_name_section_key_value_and_accepted(write_settings, section, key, value, expected):
    sections = {'universe': {'tickers': 'TCS.NS'}}
    sections.setdefault(section, {})[key] = value
    p = write_settings(sections)
    with pytest.raises(ConfigError) as e:
        load_settings(p, env={})
    msg = str(e.value)
    assert f"[{section}] {key} = {value!r}" in msg and str(p) in msg and expected in msg


def test_every_problem_is_reported_at_once(write_settings):
    p = write_settings({'universe': {'tickers': 'TCS.NS'}, 'source': {'kind': 'x', 'start': 'y'}})
    with pytest.raises(ConfigError) as e:
        load_settings(p, env={})
    assert "kind = 'x'" in str(e.value) and "start = 'y'" in str(e.value)


def test_unknown_keys_sections_and_env_vars_are_refused(write_settings):
    p = write_settings({'universe': {'tickers': 'TCS.NS'}, 'source': {'knd': 'csv'}})
    with pytest.raises(ConfigError, match=r"\[source\] unknown key 'knd' \(known: kind"):
        load_settings(p, env={})
    with pytest.raises(ConfigError, match='STOCK_NBS__SORCE__KIND names no setting'):
        load_settings(None, env={'STOCK_NBS__SORCE__KIND': 'csv'})
    (p.parent/'broken.ini').write_text('tickers = A\n')
    with pytest.raises(ConfigError, match='not a valid ini file'):
        load_settings(p.parent/'broken.ini', env={})


def test_secrets_never_in_settings_and_come_from_env_or_dotenv(write_settings, tmp_path):
    p = write_settings({'universe': {'tickers': 'TCS.NS'}, 'storage': {'supabase_key': 'abc'}})
    with pytest.raises(ConfigError, match='secrets never go in settings; set SUPABASE_KEY in the environment or .env'):
        load_settings(p, env={})
    p = write_settings({'universe': {'tickers': 'TCS.NS'}})
    (p.parent/'.env').write_text('DATABASE_URL=postgresql://u:filepass@h/db\nSUPABASE_URL=https://x.supabase.co\n')
    s = load_settings(p, env={})
    sec = load_secrets(s, env={'SUPABASE_URL': 'https://env.supabase.co'})
    assert sec.get('DATABASE_URL') == 'postgresql://u:filepass@h/db'
    assert sec.get('SUPABASE_URL') == 'https://env.supabase.co'      # the environment wins over .env
    assert 'SUPABASE_KEY' not in sec
    assert 'filepass' not in repr(sec) and 'filepass' not in str(sec)
    assert 'filepass' not in str(s.as_dict())
