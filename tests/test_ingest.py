"""Incremental bronze semantics, per-ticker isolation, nothing partial written, one commit per run."""
import numpy as np, pandas as pd, polars as pl
import pytest
from stock_nbs.config import load_settings, StockNbsError
from stock_nbs.sources import FetchResult, SyntheticSource, to_bronze
from stock_nbs.ingest import ingest
import stock_nbs.store
from stock_nbs.store import Store


class ScriptedSource:
    """A real source over an in-memory table of bars, recording every request. `table` maps ticker -> frame of
    bars; `revise` lets a test change what the vendor says for a date; `drop` makes the vendor omit dates."""
    name = 'scripted'

    def __init__(self, table):
        self.table, self.requests, self.drop = table, [], set()

    def fetch(self, tickers, start, end, interval='1d'):
        self.requests.append((tuple(tickers), pd.Timestamp(start), pd.Timestamp(end)))
        res = FetchResult()
        for t in tickers:
            if t not in self.table: res.failed[t] = f'{t}: unknown to the vendor'; continue
            df = self.table[t]
            df = df[(df.date >= start) & (df.date <= end) & ~df.date.isin(self.drop)]
            res.bars[t] = to_bronze(df, self.name)
        return res


@pytest.fixture
def market():
    src = SyntheticSource(seed=3)
    return {t: src.bars(t, '2024-01-01', '2024-06-28') for t in ['TCS.NS', 'INFY.NS', 'AAPL', 'USDINR=X']}   # (AAPL's prices need the FX series: fetched with it)


def settings_at(root, **over):
    return load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS AAPL', 'source.start': '2024-01-01',
                                                  'source.overlap_sessions': '5', 'storage.data_dir': str(root), **over})


@pytest.fixture
def cfg(tmp_path):
    return settings_at(tmp_path/'data')


def bronze_of(cfg, ticker, interval='1d', version=None):
    "A ticker's bronze rows as pandas, in date order (prints of a day in the order given)."
    df = Store(cfg.data_dir).read('bronze', interval, pl.col('ticker') == ticker, version=version).sort('date', 'seq').to_pandas()
    return df.assign(date=pd.to_datetime(df.date) if interval == '1d' else df.date)


def version(cfg, interval='1d'):
    return Store(cfg.data_dir).table('bronze', interval).version()


def test_same_date_twice_fetches_only_the_overlap_and_commits_nothing(cfg, market):
    src = ScriptedSource(market)
    first = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert (first.status == 'updated').all() and (first.rows_total == first.rows_added).all()
    v = version(cfg)
    again = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert src.requests[-1][1] == pd.Timestamp('2024-03-25')          # 5 sessions: 25, 26, 27, 28, 29 March
    assert again.ticker.tolist() == ['TCS.NS', 'INFY.NS', 'AAPL', 'USDINR=X'] and again.rows_fetched.tolist() == [5, 5, 5, 5]
    assert (again.status == 'unchanged').all() and again.rows_added.sum() == 0 and again.values_changed.sum() == 0
    assert version(cfg) == v == 0                                       # not even a commit


def test_later_date_appends_in_one_commit(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    rep = ingest(cfg, run_date='2024-04-05', source=src, progress=False)
    assert rep.rows_added.tolist() == [5, 5, 5, 5] and (rep.status == 'updated').all() and version(cfg) == 1
    stored = bronze_of(cfg, 'TCS.NS')
    expected = market['TCS.NS'][market['TCS.NS'].date <= '2024-04-05']
    np.testing.assert_array_equal(stored.close.to_numpy(), expected.close.to_numpy())
    assert stored.date.is_unique and stored.date.is_monotonic_increasing


def test_a_fetch_returning_fewer_rows_loses_nothing(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    before = bronze_of(cfg, 'INFY.NS')
    src.drop = {pd.Timestamp('2024-03-26'), pd.Timestamp('2024-03-28')}
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert rep.rows_fetched.tolist() == [3, 3, 3, 3]
    pd.testing.assert_frame_equal(bronze_of(cfg, 'INFY.NS')[['date', 'close']], before[['date', 'close']])


def test_corrected_overlap_value_is_updated_counted_and_kept_in_the_history(cfg, market, caplog):
    src = ScriptedSource({t: df.copy() for t, df in market.items()})
    ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    t = src.table['TCS.NS']
    t.loc[t.date == '2024-03-27', 'close'] += 1.25
    t.loc[t.date == '2024-03-28', 'volume'] = 4242
    with caplog.at_level('INFO', logger='stock_nbs'):
        rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False).set_index('ticker')
    assert rep.loc['TCS.NS', 'values_changed'] == 2 and rep.loc['TCS.NS', 'status'] == 'updated'
    assert rep.loc['INFY.NS', 'values_changed'] == 0
    stored = bronze_of(cfg, 'TCS.NS').set_index('date')
    true = market['TCS.NS'].set_index('date')
    assert stored.loc['2024-03-27', 'close'] == true.loc['2024-03-27', 'close'] + 1.25
    assert stored.loc['2024-03-28', 'volume'] == 4242
    assert bronze_of(cfg, 'TCS.NS', version=0).set_index('date').loc['2024-03-27', 'close'] == true.loc['2024-03-27', 'close']   # the old value, one version back
    assert 'TCS.NS: 5 bars fetched, 0 added, 2 values changed' in caplog.text


def test_a_failing_ticker_is_isolated_and_reported(cfg, market):
    src = ScriptedSource({k: v for k, v in market.items() if k != 'INFY.NS'})
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False).set_index('ticker')
    assert rep.loc['INFY.NS', 'status'] == 'failed' and 'unknown to the vendor' in rep.loc['INFY.NS', 'error']
    assert rep.loc[['TCS.NS', 'AAPL'], 'status'].tolist() == ['updated', 'updated']
    assert sorted(Store(cfg.data_dir).read('bronze', '1d', columns=[pl.col('ticker').unique()])['ticker']) == ['AAPL', 'TCS.NS', 'USDINR=X']


def test_a_failed_commit_fails_the_tickers_it_carried_keeps_the_table_and_the_next_run_fetches_again(cfg, market, monkeypatch):
    import deltalake
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-22', source=src, progress=False)
    def full_disk(*a, **k): raise OSError(28, 'No space left on device')
    monkeypatch.setattr(deltalake.table.TableMerger, 'execute', full_disk)   # the day's bars are new: appended, and revisions merged
    monkeypatch.setattr(stock_nbs.store, 'write_deltalake', full_disk)
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert (rep.status == 'failed').all() and rep.error.str.contains('No space left on device').all() and rep.error.str.contains('previous version is intact').all()
    assert version(cfg) == 0 and bronze_of(cfg, 'AAPL').date.iloc[-1] == pd.Timestamp('2024-03-22')
    monkeypatch.undo()
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert (rep.status == 'updated').all() and rep.rows_added.tolist() == [5, 5, 5, 5]
    assert bronze_of(cfg, 'AAPL').date.iloc[-1] == pd.Timestamp('2024-03-29')


def test_start_and_run_date_checks(cfg, market):
    with pytest.raises(StockNbsError, match='is in the future'):
        ingest(cfg, run_date=pd.Timestamp.now() + pd.Timedelta(days=3), source=ScriptedSource(market))
    with pytest.raises(StockNbsError, match=r'\[source\] start 2024-01-01 is after the run date 2023-06-01'):
        ingest(cfg, run_date='2023-06-01', source=ScriptedSource(market))


def test_synthetic_end_to_end_with_faults_is_idempotent(tmp_path):
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS AAPL USDINR=X', 'source.kind': 'synthetic',
                                                  'source.synthetic_faults': 'duplicate nan spike', 'source.synthetic_fault_rate': '0.05',
                                                  'source.start': '2023-01-01', 'storage.data_dir': str(tmp_path/'d')})
    ingest(cfg, run_date='2024-06-28', progress=False)
    rep = ingest(cfg, run_date='2024-06-28', progress=False)
    assert (rep.status == 'unchanged').all() and version(cfg) == 0
    stored = bronze_of(cfg, 'TCS.NS')
    assert stored.date.duplicated().any() and (stored.seq > 0).any()     # bronze keeps every print the source gave
    fresh = SyntheticSource(faults=('duplicate', 'nan', 'spike'), fault_rate=0.05).bars('TCS.NS', '2023-01-01', '2024-06-28')
    np.testing.assert_array_equal(stored.close.to_numpy(), fresh.close.to_numpy())


def test_overlap_zero_asks_only_for_new_days(tmp_path, market):
    cfg = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS', 'source.start': '2024-01-01',
                                                  'source.overlap_sessions': '0', 'storage.data_dir': str(tmp_path/'d')})
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-28', source=src, progress=False)
    rep = ingest(cfg, run_date='2024-03-28', source=src, progress=False)
    assert len(src.requests) == 1 and rep.status.tolist() == ['unchanged'] and rep.rows_total.tolist() == [len(pd.bdate_range('2024-01-01', '2024-03-28'))]
    rep = ingest(cfg, run_date='2024-04-02', source=src, progress=False)
    assert src.requests[-1][1] == pd.Timestamp('2024-03-29') and rep.rows_added.tolist() == [3]


def test_the_next_fetch_starts_overlap_sessions_back_whatever_the_overlap(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-05-31', source=src, progress=False)
    days = bronze_of(cfg, 'TCS.NS').date.dt.strftime('%Y-%m-%d').tolist()
    ingest(cfg, run_date='2024-05-31', source=src, progress=False)
    assert src.requests[-1][1] == pd.Timestamp(days[-5])
    deep = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS AAPL', 'source.start': '2024-01-01',
                                                  'source.overlap_sessions': '40', 'storage.data_dir': str(cfg.data_dir)})
    ingest(deep, run_date='2024-05-31', source=src, progress=False)
    assert src.requests[-1][1] == pd.Timestamp(days[-40])


def test_a_corrupted_bronze_file_names_the_table_and_the_way_out(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-05-31', source=src, progress=False)
    for f in (cfg.data_dir/'bronze'/'1d').rglob('*.parquet'): f.write_bytes(b'PAR1 garbage')
    with pytest.raises(StockNbsError, match=f"table {cfg.data_dir/'bronze'/'1d'} is unreadable"):
        ingest(cfg, run_date='2024-06-07', source=src, progress=False)


def test_intraday_bars_of_two_exchanges_share_one_table_in_utc(tmp_path):
    over = {'universe.tickers': 'TCS.NS AAPL', 'source.kind': 'synthetic', 'source.synthetic_faults': '', 'source.intraday_days': '5'}
    cfg = settings_at(tmp_path/'d', **over)
    first = ingest(cfg, run_date='2024-06-26', interval='15m', progress=False)
    later = ingest(cfg, run_date='2024-06-28', interval='15m', progress=False)
    assert (first.rows_added > 0).all() and (later.rows_added > 0).all() and version(cfg, '15m') == 1
    src = SyntheticSource()
    for t, tz in (('TCS.NS', 'Asia/Kolkata'), ('AAPL', 'America/New_York')):
        got = bronze_of(cfg, t, '15m')
        assert str(got.date.dt.tz) == 'UTC'
        want = src.intraday_bars(t, '2024-06-22', '2024-06-28', '15m')
        assert str(want.date.dt.tz) == tz
        pd.testing.assert_series_equal(got.date.dt.tz_convert(tz).reset_index(drop=True), want.date.reset_index(drop=True).dt.as_unit('us'), check_names=False)
