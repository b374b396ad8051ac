"""`load_features` and the gold table: filters pushed down, columns, dtypes, errors, any working directory; the same rows
from polars, deltalake, DuckDB and the one-file export; `as_of` by run id, version and time; a vacuumed version named."""
import os, re, shutil, subprocess, sys, time
import numpy as np, pandas as pd, polars as pl
import pytest
from stock_nbs import load_features
from stock_nbs.config import load_settings
from stock_nbs.pipeline import DailyRun
from stock_nbs.store import Store, StoreError, export_path, maintain
from conftest import run_cli

TICKERS = 'TCS.NS INFY.NS SBIN.NS AAPL MSFT USDINR=X'


def daily_run(cfg, day):
    "One daily run through every stage, as the papermill notebook drives it; its run id."
    run = DailyRun(cfg, day, source='synthetic').open()
    run.ingest(progress=False); run.transform(progress=False); run.finish()
    return run.run_id


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    "Two daily runs on a synthetic market with faults: (settings, day-1 run id, day-1 dataset, day-1 time, day-2 run id)."
    root = tmp_path_factory.mktemp('lf')
    ini = root/'settings.ini'
    ini.write_text(f"[universe]\ntickers = {TICKERS}\n[source]\nkind = synthetic\nstart = 2022-01-01\nsynthetic_faults = ohlc spike duplicate placeholder\n"
                   "[quality]\nmin_rows = 100\n[storage]\ndata_dir = data\n[run]\nruns_dir = runs\nreports_dir = reports\n")
    cfg = load_settings(ini, env={})
    day1 = daily_run(cfg, '2024-06-27')
    first, t1 = load_features(settings=cfg), pd.Timestamp.now(tz='UTC')
    time.sleep(0.05)
    return cfg, day1, first, t1, daily_run(cfg, '2024-06-28')


EXPECTED_DTYPES = {'ticker': 'str', 'date': 'datetime64[ns]', 'close': 'float64', 'volume': 'Int64', 'currency': 'str',
                   'fx_rate': 'float64', 'flag_outlier': 'bool', 'sma_20': 'float64', 'rsi_14': 'float64', 'is_warmup': 'bool'}


def test_every_reader_sees_the_current_rows_after_two_runs(built):
    cfg, *_ = built
    df = load_features(settings=cfg)
    assert df.date.max() == pd.Timestamp('2024-06-28') and not df.duplicated(['ticker', 'date']).any()
    assert df[['ticker', 'date']].equals(df[['ticker', 'date']].sort_values(['ticker', 'date'], ignore_index=True))
    assert {c: str(df[c].dtype) for c in EXPECTED_DTYPES} == EXPECTED_DTYPES
    assert not [c for c in df.columns if c.startswith('state_') or c == 'year']
    gold = str(cfg.data_dir/'gold'/'1d')
    as_pd = lambda x: x.sort(['ticker', 'date']).select(df.columns).to_pandas()
    import deltalake, duckdb
    lf = pl.scan_delta(gold)                                            # DuckDB reads the table through polars (the README's one line)
    readers = {'polars': lf.collect(), 'deltalake': pl.from_pandas(deltalake.DeltaTable(gold).to_pandas()),
               'duckdb': duckdb.sql("select * from lf").pl(), 'export': pl.read_parquet(export_path(Store(cfg.data_dir)))}
    keys = readers['export'].select('ticker', 'date')
    assert keys.equals(keys.sort('ticker', 'date'))                     # the one file in the seeds' order, day 2's rows with their tickers
    for name, got in readers.items():
        got = as_pd(got.with_columns(pl.col('date').cast(pl.Datetime('ns')), pl.col('volume').cast(pl.Int64)))
        got['volume'] = got.volume.astype('Int64')
        pd.testing.assert_frame_equal(got, df, check_dtype=False, obj=name)


def test_as_of_a_run_id_a_version_or_a_time_gives_that_dataset_back(built):
    cfg, day1, first, t1, day2 = built
    assert first.date.max() == pd.Timestamp('2024-06-27')
    pd.testing.assert_frame_equal(load_features(settings=cfg, as_of=day1), first)
    v = Store(cfg.data_dir).table('runs', None)
    runs = Store(cfg.data_dir).read('runs', None).sort('run_id')
    assert runs['run_id'].to_list() == [day1, day2] and runs['status'].to_list() == ['ok', 'ok']
    import json
    gold_v = json.loads(runs['versions'][0])['gold/1d']
    pd.testing.assert_frame_equal(load_features(settings=cfg, as_of=gold_v), first)
    pd.testing.assert_frame_equal(load_features(settings=cfg, as_of=t1), first)
    assert load_features(settings=cfg, as_of=day2).date.max() == pd.Timestamp('2024-06-28')
    with pytest.raises(StoreError, match="as_of 'no-such-run' is neither a table version, a run id"):
        load_features(settings=cfg, as_of='no-such-run')
    with pytest.raises(StoreError, match=r"has no version 99 yet: its newest is \d+"):
        load_features(settings=cfg, as_of=99)


def test_as_of_a_time_reads_the_commit_times_a_copied_data_root_keeps(built, tmp_path):
    "A backup restored, a copy or an upload gives the log files new times; `as_of` a time still means the commits' own times."
    cfg, day1, first, t1, day2 = built
    shutil.copytree(cfg.data_dir, tmp_path/'data')
    long_ago = time.time() - 400 * 86400                                 # file times before either run: by them, every version is older than t1
    for f in (tmp_path/'data').rglob('_delta_log/*.json'): os.utime(f, (long_ago, long_ago))
    copy = load_settings(cfg.path, env={}, overrides={'storage.data_dir': str(tmp_path/'data')})
    pd.testing.assert_frame_equal(load_features(settings=copy, as_of=t1), first)
    assert load_features(settings=copy, as_of=pd.Timestamp.now(tz='UTC')).date.max() == pd.Timestamp('2024-06-28')
    with pytest.raises(StoreError, match=r"had no version at 2020-01-01 00:00:00 UTC: its first was committed .* ask for a later time"):
        load_features(settings=copy, as_of='2020-01-01')


def test_turning_the_export_off_removes_the_old_file(built, tmp_path):
    "An export left from before `[storage] export_parquet = false` would stop following gold: the next pass removes it and says so."
    cfg, *_ = built
    shutil.copytree(cfg.data_dir, tmp_path/'data')
    (tmp_path/'settings.ini').write_text(cfg.path.read_text())          # (its data_dir is relative: the copy)
    old = export_path(Store(tmp_path/'data'))
    assert old.exists()
    p = run_cli('transform', '--settings', tmp_path/'settings.ini', '--no-progress', env={'STOCK_NBS__STORAGE__EXPORT_PARQUET': 'false'})
    assert f"one-file export: removed {old} ([storage] export_parquet = false)" in p.stdout and not old.exists()
    assert 'one-file export' not in run_cli('transform', '--settings', tmp_path/'settings.ini', '--no-progress', env={'STOCK_NBS__STORAGE__EXPORT_PARQUET': 'false'}).stdout
    shutil.copy(export_path(Store(cfg.data_dir)), old)                    # the daily run does the same
    daily_run(load_settings(tmp_path/'settings.ini', env={}, overrides={'storage.export_parquet': 'false'}), '2024-06-28')
    assert not old.exists()


def test_filters_and_columns(built):
    cfg, *_ = built
    df = load_features(['SBIN.NS', 'AAPL'], start='2024-03-01', end='2024-03-29', columns=['close', 'rsi_14'], settings=cfg)
    assert list(df.columns) == ['ticker', 'date', 'close', 'rsi_14']
    assert df.ticker.unique().tolist() == ['AAPL', 'SBIN.NS']
    assert df.date.min() == pd.Timestamp('2024-03-01') and df.date.max() == pd.Timestamp('2024-03-29')
    one = load_features('TCS.NS', start=pd.Timestamp('2024-06-28'), settings=cfg)
    assert len(one) == 1 and one.ticker.iloc[0] == 'TCS.NS'
    assert load_features('TCS.NS', columns=['close'], settings=str(cfg.path)).equals(load_features('TCS.NS', columns=['close'], settings=cfg))   # settings as a path
    assert isinstance(load_features('TCS.NS', settings=cfg, engine='polars'), pl.DataFrame)


def test_filters_reach_the_scan(built):
    cfg, *_ = built
    plan = pl.scan_delta(str(cfg.data_dir/'gold'/'1d')).filter(pl.col('ticker') == 'TCS.NS', pl.col('year') == 2024).explain()
    assert 'TCS.NS' in plan and 'year' in plan


def test_empty_result_keeps_columns_and_dtypes(built):
    cfg, *_ = built
    empty = load_features(['TCS.NS'], start='2030-01-01', settings=cfg)
    full = load_features('TCS.NS', settings=cfg)
    assert len(empty) == 0 and list(empty.columns) == list(full.columns)
    assert (empty.dtypes == full.dtypes).all()
    assert len(load_features(start='2030-01-01', settings=cfg)) == 0


def test_unknown_column_and_missing_table_errors(built, tmp_path):
    cfg, *_ = built
    with pytest.raises(StoreError, match=r'unknown column\(s\) rsi_99, foo; available: ticker, date, open'):
        load_features(columns=['close', 'rsi_99', 'foo'], settings=cfg)
    with pytest.raises(StoreError, match=r"start '2024-13-01' is not a date or time \(.*\); give e.g. '2024-06-28'"):
        load_features(start='2024-13-01', settings=cfg)
    other = load_settings(None, env={}, overrides={'storage.data_dir': str(tmp_path)})
    with pytest.raises(StoreError, match=r'no gold table at .*run `stock-nbs run` \(or `make demo`\) first'):
        load_features(settings=other)


def test_works_from_any_working_directory(built):
    cfg, *_ = built
    code = "from stock_nbs import load_features; df = load_features(['INFY.NS'], columns=['close']); print(len(df), df.ticker.iloc[0])"
    expected = f"{len(load_features('INFY.NS', settings=cfg))} INFY.NS"
    env = {'STOCK_NBS_SETTINGS': str(cfg.path), 'PATH': '/usr/bin:/bin'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd='/', env=env)
    assert out.stdout.strip() == expected, out.stderr
    deep = cfg.path.parent/'notebooks'/'research'; deep.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=deep, env={'PATH': '/usr/bin:/bin'})
    assert out.stdout.strip() == expected, out.stderr


def test_transform_command(built):
    cfg, *_ = built
    p = run_cli('transform', '--settings', cfg.path, '--no-progress', check=0)
    assert 'transform 1d: 6 tickers, 6 ok, 0 failed' in p.stdout and 'output gate: passed' in p.stdout
    assert 'pass: 0 tickers recomputed' in p.stdout and f"gold table: {cfg.data_dir/'gold'/'1d'}" in p.stdout
    assert f"one-file export: {cfg.data_dir/'export'/'1d'/'features_dataset.parquet'}" in p.stdout


def test_transform_isolates_a_ticker_without_bronze(built):
    cfg, *_ = built
    p = run_cli('transform', '--settings', cfg.path, '--no-progress', '--tickers', 'TCS.NS,WIPRO.NS', env={'STOCK_NBS__RUN__MAX_FAILURE_SHARE': '0.6'}, check=0)
    assert "FAILED WIPRO.NS: WIPRO.NS: no bronze bars in" in p.stdout and 'run `stock-nbs ingest` first' in p.stdout
    assert load_features(settings=cfg).ticker.nunique() == 6         # the table still holds the whole universe


def test_maintain_from_the_command_line(built, tmp_path):
    cfg, *_ = built
    shutil.copytree(cfg.data_dir, tmp_path/'data')
    (tmp_path/'settings.ini').write_text(cfg.path.read_text())
    before = load_features(settings=cfg)
    p = run_cli('maintain', '--settings', tmp_path/'settings.ini', '--interval', '1d', '--interval', '5m')
    assert re.search(r"gold/1d: [1-9]\d* small files compacted into 1, 0 old files vacuumed; versions from \d+ readable", p.stdout), p.stdout
    assert f"5m: no tables of this interval in {tmp_path/'data'}; nothing to maintain" in p.stdout
    pd.testing.assert_frame_equal(load_features(settings=load_settings(tmp_path/'settings.ini', env={})), before)


def test_maintain_compacts_keeps_pinned_versions_and_names_vacuumed_ones(tmp_path):
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS', 'source.kind': 'synthetic', 'source.start': '2024-01-01',
                                                  'quality.min_rows': '10', 'storage.data_dir': str(tmp_path/'d'), 'run.runs_dir': str(tmp_path/'runs'),
                                                  'run.reports_dir': str(tmp_path/'rep'), 'run.keep_runs': '2'})
    days = ('2024-06-20', '2024-06-21', '2024-06-24', '2024-06-25', '2024-06-26', '2024-06-27')
    gold_files = lambda: len(list((cfg.data_dir/'gold'/'1d').rglob('*.parquet')))
    ids = [daily_run(cfg, d) for d in days[:4]]
    before = {r: load_features(settings=cfg, as_of=r) for r in ids}
    n = gold_files()
    first = {m.table: m for m in maintain(cfg)}
    assert first['gold/1d'].files_removed > 1 and first['gold/1d'].vacuumed == 0 and gold_files() > n   # the kept runs still need the small files
    for r in ids: pd.testing.assert_frame_equal(load_features(settings=cfg, as_of=r), before[r])
    ids += [daily_run(cfg, d) for d in days[4:]]
    before |= {r: load_features(settings=cfg, as_of=r) for r in ids[4:]}
    second = {m.table: m for m in maintain(cfg)}
    assert second['gold/1d'].vacuumed > 0 and second['bronze/1d'].vacuumed > 0
    for r in ids[-2:]: pd.testing.assert_frame_equal(load_features(settings=cfg, as_of=r), before[r])   # the kept runs' versions stay readable
    oldest = Store(cfg.data_dir).oldest('gold', '1d')
    with pytest.raises(StoreError, match=f'removed versions before {oldest}: ask for version {oldest} or later'):
        load_features(settings=cfg, as_of=ids[0])
    pd.testing.assert_frame_equal(load_features(settings=cfg), before[ids[-1]])
