"""`load_features`: filters pushed into Parquet, columns, empty results, stable dtypes, errors, any working directory."""
import subprocess, sys
import numpy as np, pandas as pd
import pyarrow.parquet as pq
import pytest
from stock_nbs import load_features
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from stock_nbs.store import Store, StoreError
from conftest import run_cli

TICKERS = 'TCS.NS INFY.NS SBIN.NS AAPL MSFT USDINR=X'


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp('lf')
    ini = root/'settings.ini'
    ini.write_text(f"[universe]\ntickers = {TICKERS}\n[source]\nkind = synthetic\nstart = 2022-01-01\n"
                   "[quality]\nmin_rows = 100\n[storage]\ndata_dir = data\nfsync = false\n")
    cfg = load_settings(ini, env={})
    ingest(cfg, run_date='2024-06-28', progress=False)
    transform(cfg, progress=False, today='2024-06-28')
    return cfg


EXPECTED_DTYPES = {'ticker': 'str', 'date': 'datetime64[ns]', 'close': 'float64', 'volume': 'Int64', 'currency': 'str',
                   'fx_rate': 'float64', 'flag_outlier': 'bool', 'sma_20': 'float64', 'rsi_14': 'float64', 'is_warmup': 'bool'}


def test_all_rows_equal_the_gold_files(built):
    df = load_features(settings=built)
    st = Store(built.data_dir)
    gold = pd.concat([st.read('gold', '1d', t) for t in sorted(TICKERS.split())], ignore_index=True)
    gold['volume'] = gold['volume'].astype('Int64')
    pd.testing.assert_frame_equal(df, gold, check_dtype=False)
    assert df[['ticker', 'date']].equals(df[['ticker', 'date']].sort_values(['ticker', 'date'], ignore_index=True))
    assert {c: str(df[c].dtype) for c in EXPECTED_DTYPES} == EXPECTED_DTYPES


def test_filters_and_columns(built):
    df = load_features(['SBIN.NS', 'AAPL'], start='2024-03-01', end='2024-03-29', columns=['close', 'rsi_14'], settings=built)
    assert list(df.columns) == ['ticker', 'date', 'close', 'rsi_14']
    assert df.ticker.unique().tolist() == ['AAPL', 'SBIN.NS']
    assert df.date.min() == pd.Timestamp('2024-03-01') and df.date.max() == pd.Timestamp('2024-03-29')
    assert len(df) == 2 * len(pd.bdate_range('2024-03-01', '2024-03-29'))
    one = load_features('TCS.NS', start=pd.Timestamp('2024-06-28'), settings=built)
    assert len(one) == 1 and one.ticker.iloc[0] == 'TCS.NS'


def test_filters_are_pushed_into_parquet(built):
    path = Store(built.data_dir).consolidated_path('1d')
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups >= 1
    filtered = pq.read_table(path, filters=[('ticker', 'in', ['TCS.NS'])])
    assert filtered.num_rows == len(load_features('TCS.NS', settings=built))


def test_empty_result_keeps_columns_and_dtypes(built):
    empty = load_features(['NOPE.NS'], settings=built)
    full = load_features('TCS.NS', settings=built)
    assert len(empty) == 0 and list(empty.columns) == list(full.columns)
    assert (empty.dtypes == full.dtypes).all()
    assert len(load_features(start='2030-01-01', settings=built)) == 0


def test_unknown_column_and_missing_dataset_errors(built, tmp_path):
    with pytest.raises(StoreError, match=r'unknown column\(s\) rsi_99, foo; available: ticker, date, open'):
        load_features(columns=['close', 'rsi_99', 'foo'], settings=built)
    other = load_settings(None, env={}, overrides={'storage.data_dir': str(tmp_path)})
    with pytest.raises(StoreError, match=r'no consolidated 1d dataset at .*run `stock-nbs transform`'):
        load_features(settings=other)


def test_works_from_any_working_directory(built, tmp_path):
    code = "from stock_nbs import load_features; df = load_features(['INFY.NS'], columns=['close']); print(len(df), df.ticker.iloc[0])"
    expected = f"{len(load_features('INFY.NS', settings=built))} INFY.NS"
    env = {'STOCK_NBS_SETTINGS': str(built.path), 'PATH': '/usr/bin:/bin'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd='/', env=env)
    assert out.stdout.strip() == expected, out.stderr
    deep = built.path.parent/'notebooks'/'research'; deep.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=deep, env={'PATH': '/usr/bin:/bin'})
    assert out.stdout.strip() == expected, out.stderr


def test_transform_command(built):
    p = run_cli('transform', '--settings', built.path, '--no-progress', check=0)
    assert 'transform 1d: 6 tickers, 6 ok, 0 failed' in p.stdout and 'output gate: passed' in p.stdout
    assert f"consolidated dataset: {built.data_dir/'consolidated'/'1d'/'features_dataset.parquet'}" in p.stdout


def test_transform_isolates_a_ticker_without_bronze(built):
    p = run_cli('transform', '--settings', built.path, '--no-progress', '--tickers', 'TCS.NS,WIPRO.NS', env={'STOCK_NBS__RUN__MAX_FAILURE_SHARE': '0.6'}, check=0)
    assert "FAILED WIPRO.NS: WIPRO.NS: no bronze bars under" in p.stdout and 'run `stock-nbs ingest` first' in p.stdout
    assert load_features(settings=built).ticker.nunique() == 6         # the dataset still holds the whole universe
