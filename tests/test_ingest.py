"""Incremental bronze semantics, per-ticker isolation, nothing partial written."""
import hashlib
import numpy as np, pandas as pd
import pytest
from stock_nbs.config import load_settings, StockNbsError
from stock_nbs.sources import FetchResult, SyntheticSource, to_bronze
from stock_nbs.ingest import ingest
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
    return {t: src.bars(t, '2024-01-01', '2024-06-28') for t in ['TCS.NS', 'INFY.NS', 'AAPL']}


def settings_at(root, **over):
    return load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS AAPL', 'source.start': '2024-01-01',
                                                  'source.overlap_sessions': '5', 'storage.data_dir': str(root), **over})


@pytest.fixture
def cfg(tmp_path):
    return settings_at(tmp_path/'data')


def digest(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root/'bronze'/'1d').glob('*.parquet'))}


def fill_disk_when_writing(monkeypatch, marker):
    """Make Parquet writes to a path containing `marker` leave half a file and fail as a full disk does; undo with monkeypatch.undo()."""
    import pyarrow.parquet as pq
    real = pq.write_table
    def write(table, where, *a, **k):
        if marker in str(where):
            open(where, 'wb').write(b'PAR1 half a file')
            raise OSError(28, 'No space left on device')
        return real(table, where, *a, **k)
    monkeypatch.setattr(pq, 'write_table', write)


def test_same_date_twice_fetches_only_the_overlap_and_changes_nothing(cfg, market):
    src = ScriptedSource(market)
    first = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert (first.status == 'updated').all() and (first.rows_total == first.rows_added).all()
    before = digest(cfg.data_dir)
    again = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert src.requests[-1][1] == pd.Timestamp('2024-03-25')          # 5 sessions: 25, 26, 27, 28, 29 March
    assert again.rows_fetched.tolist() == [5, 5, 5]
    assert (again.status == 'unchanged').all() and again.rows_added.sum() == 0 and again.values_changed.sum() == 0
    assert digest(cfg.data_dir) == before                               # not even rewritten


def test_later_date_appends(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    rep = ingest(cfg, run_date='2024-04-05', source=src, progress=False)
    assert rep.rows_added.tolist() == [5, 5, 5] and (rep.status == 'updated').all()
    stored = Store(cfg.data_dir).read('bronze', '1d', 'TCS.NS')
    expected = market['TCS.NS'][market['TCS.NS'].date <= '2024-04-05']
    np.testing.assert_array_equal(stored.close.to_numpy(), expected.close.to_numpy())
    assert stored.date.is_unique and stored.date.is_monotonic_increasing


def test_a_fetch_returning_fewer_rows_loses_nothing(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    before = Store(cfg.data_dir).read('bronze', '1d', 'INFY.NS')
    src.drop = {pd.Timestamp('2024-03-26'), pd.Timestamp('2024-03-28')}
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert rep.rows_fetched.tolist() == [3, 3, 3]
    after = Store(cfg.data_dir).read('bronze', '1d', 'INFY.NS')
    pd.testing.assert_frame_equal(after[['date', 'close']], before[['date', 'close']])


def test_corrected_overlap_value_is_updated_and_counted(cfg, market, caplog):
    src = ScriptedSource({t: df.copy() for t, df in market.items()})
    ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    t = src.table['TCS.NS']
    t.loc[t.date == '2024-03-27', 'close'] += 1.25
    t.loc[t.date == '2024-03-28', 'volume'] = 4242
    with caplog.at_level('INFO', logger='stock_nbs'):
        rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False).set_index('ticker')
    assert rep.loc['TCS.NS', 'values_changed'] == 2 and rep.loc['TCS.NS', 'status'] == 'updated'
    assert rep.loc['INFY.NS', 'values_changed'] == 0
    stored = Store(cfg.data_dir).read('bronze', '1d', 'TCS.NS').set_index('date')
    assert stored.loc['2024-03-27', 'close'] == market['TCS.NS'].set_index('date').loc['2024-03-27', 'close'] + 1.25
    assert stored.loc['2024-03-28', 'volume'] == 4242
    assert 'TCS.NS: 5 bars fetched, 0 added, 2 values changed' in caplog.text


def test_a_failing_ticker_is_isolated_and_reported(cfg, market):
    src = ScriptedSource({k: v for k, v in market.items() if k != 'INFY.NS'})
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False).set_index('ticker')
    assert rep.loc['INFY.NS', 'status'] == 'failed' and 'unknown to the vendor' in rep.loc['INFY.NS', 'error']
    assert rep.loc[['TCS.NS', 'AAPL'], 'status'].tolist() == ['updated', 'updated']
    assert Store(cfg.data_dir).tickers('bronze', '1d') == ['AAPL', 'TCS.NS']


def test_a_crash_while_writing_one_ticker_keeps_the_others_and_the_old_file(tmp_path, market, monkeypatch):
    cfg = settings_at(tmp_path/'data', **{'storage.max_parts': '0'})   # every change rewrites its ticker's file
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-22', source=src, progress=False)
    before = digest(cfg.data_dir)
    fill_disk_when_writing(monkeypatch, 'INFY')
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False).set_index('ticker')
    assert rep.loc['INFY.NS', 'status'] == 'failed' and 'No space left on device' in rep.loc['INFY.NS', 'error']
    assert rep.loc['TCS.NS', 'status'] == 'updated'
    after = digest(cfg.data_dir)
    assert after['INFY.NS.parquet'] == before['INFY.NS.parquet']      # old file intact
    assert not list((cfg.data_dir/'bronze'/'1d').glob('.*'))           # no temporary file left


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
    before = digest(cfg.data_dir)
    rep = ingest(cfg, run_date='2024-06-28', progress=False)
    assert (rep.status == 'unchanged').all() and digest(cfg.data_dir) == before
    stored = Store(cfg.data_dir).read('bronze', '1d', 'TCS.NS')
    assert stored.date.duplicated().any()                               # bronze keeps what the source said
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


def test_the_next_fetch_is_planned_from_the_footer_as_from_the_dates(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-05-31', source=src, progress=False)
    st = Store(cfg.data_dir)
    days = st.read('bronze', '1d', 'TCS.NS').date.dt.strftime('%Y-%m-%d').tolist()
    meta = st.footer('bronze', '1d', 'TCS.NS')[0]
    assert {k: meta[k] for k in ('last_days', 'all_days', 'rows')} == {'last_days': days[-32:], 'all_days': False, 'rows': len(days)}
    ingest(cfg, run_date='2024-05-31', source=src, progress=False)
    from_footer = src.requests[-1]
    assert from_footer[1] == pd.Timestamp(days[-5])
    deep = load_settings(None, env={}, overrides={'universe.tickers': 'TCS.NS INFY.NS AAPL', 'source.start': '2024-01-01',
                                                  'source.overlap_sessions': '40', 'storage.data_dir': str(cfg.data_dir)})
    ingest(deep, run_date='2024-05-31', source=src, progress=False)   # more sessions than the footer lists: from the dates
    assert src.requests[-1][1] == pd.Timestamp(days[-40])
    for t in market: st.write(st.read('bronze', '1d', t), 'bronze', '1d', t)   # files as an older version wrote them
    assert st.footer('bronze', '1d', 'TCS.NS')[0] == {}
    ingest(cfg, run_date='2024-05-31', source=src, progress=False)
    assert src.requests[-1] == from_footer


def test_a_bronze_file_with_a_broken_footer_fails_only_its_ticker(cfg, market):
    import pyarrow as pa, pyarrow.parquet as pq
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-05-31', source=src, progress=False)
    path = Store(cfg.data_dir).path('bronze', '1d', 'INFY.NS')
    t = pq.read_table(path)
    pq.write_table(t.replace_schema_metadata({**t.schema.metadata, b'stock_nbs': b'{not json'}), path)
    rep = ingest(cfg, run_date='2024-06-07', source=src, progress=False).set_index('ticker')
    assert rep.loc['INFY.NS', 'status'] == 'failed' and str(path) in rep.loc['INFY.NS', 'error'] and 'move it aside' in rep.loc['INFY.NS', 'error']
    assert (rep.drop('INFY.NS').status == 'updated').all()


def test_new_bars_go_to_one_part_and_read_as_if_each_file_was_rewritten(tmp_path, market):
    """Parts and file rewrites give the same bars, reports and fetch plans, through revisions, omitted dates and compactions."""
    runs = ['2024-03-22', '2024-03-29', '2024-04-05', '2024-04-05', '2024-04-12', '2024-04-19', '2024-04-26']
    modes = {'files': settings_at(tmp_path/'files', **{'storage.max_parts': '0'}), 'parts': settings_at(tmp_path/'parts', **{'storage.max_parts': '2'})}
    srcs = {m: ScriptedSource({t: df.copy() for t, df in market.items()}) for m in modes}
    for i, day in enumerate(runs):
        if i == 3:  # the vendor revises a close in the overlap and omits a day
            for src in srcs.values():
                tcs = src.table['TCS.NS']; tcs.loc[tcs.date == '2024-04-03', 'close'] += 2.5
                src.drop = {pd.Timestamp('2024-04-02')}
        reps = {m: ingest(cfg, run_date=day, source=srcs[m], progress=False) for m, cfg in modes.items()}
        pd.testing.assert_frame_equal(reps['parts'], reps['files'])
        assert srcs['parts'].requests == srcs['files'].requests
        for t in market:  # (fetched_at: when each run fetched, which differs between the two roots)
            pd.testing.assert_frame_equal(*(Store(tmp_path/m).read('bronze', '1d', t).drop(columns='fetched_at') for m in modes))
        parts = Store(tmp_path/'parts').parts('bronze', '1d')
        assert len(parts) == [0, 1, 2, 0, 1, 2, 0][i], (day, parts)    # the first run writes files; a third part folds them all back
    assert Store(tmp_path/'parts').read('bronze', '1d', 'TCS.NS').set_index('date').close['2024-04-03'] == \
        market['TCS.NS'].set_index('date').close['2024-04-03'] + 2.5
    assert not list((tmp_path/'files'/'bronze'/'1d').glob('_parts/*'))


def test_a_failed_part_write_fails_its_tickers_and_the_next_run_fetches_again(cfg, market, monkeypatch):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-22', source=src, progress=False)
    before = digest(cfg.data_dir)
    fill_disk_when_writing(monkeypatch, '_parts')
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert (rep.status == 'failed').all() and rep.error.str.contains('No space left on device').all() and rep.error.str.contains('_parts').all()
    assert digest(cfg.data_dir) == before and not list((cfg.data_dir/'bronze'/'1d').rglob('*.tmp'))
    assert Store(cfg.data_dir).parts('bronze', '1d') == []
    monkeypatch.undo()
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    assert (rep.status == 'updated').all() and rep.rows_added.tolist() == [5, 5, 5]
    assert Store(cfg.data_dir).read('bronze', '1d', 'AAPL').date.iloc[-1] == pd.Timestamp('2024-03-29')


def test_an_unreadable_part_names_itself_and_what_to_do(cfg, market):
    src = ScriptedSource(market)
    ingest(cfg, run_date='2024-03-22', source=src, progress=False)
    ingest(cfg, run_date='2024-03-29', source=src, progress=False)
    (_, part), = Store(cfg.data_dir).parts('bronze', '1d')
    part.write_bytes(b'PAR1 garbage')
    with pytest.raises(StockNbsError, match=f'part {part} is unreadable.*move it aside'):
        Store(cfg.data_dir).read('bronze', '1d', 'TCS.NS')
    part.rename(part.with_suffix('.aside'))
    rep = ingest(cfg, run_date='2024-03-29', source=src, progress=False)   # the next run fetches those days again
    assert rep.rows_added.tolist() == [5, 5, 5]


def test_intraday_bars_of_two_exchanges_go_to_one_part_and_keep_their_timezones(tmp_path):
    over = {'universe.tickers': 'TCS.NS AAPL', 'source.kind': 'synthetic', 'source.synthetic_faults': '', 'source.intraday_days': '5'}
    modes = {m: settings_at(tmp_path/m, **over, **{'storage.max_parts': n}) for m, n in (('files', '0'), ('parts', '10'))}
    for day in ('2024-06-26', '2024-06-28'):
        reps = {m: ingest(cfg, run_date=day, interval='15m', progress=False) for m, cfg in modes.items()}
        pd.testing.assert_frame_equal(reps['parts'], reps['files'])
    assert len(Store(tmp_path/'parts').parts('bronze', '15m')) == 1 and (reps['parts'].rows_added > 0).all()
    for t, tz in (('TCS.NS', 'Asia/Kolkata'), ('AAPL', 'America/New_York')):
        got = Store(tmp_path/'parts').read('bronze', '15m', t)
        assert str(got.date.dt.tz) == tz
        pd.testing.assert_frame_equal(got.drop(columns='fetched_at'), Store(tmp_path/'files').read('bronze', '15m', t).drop(columns='fetched_at'))


def test_merging_many_tickers_at_once_gives_what_merging_each_alone_gives(tmp_path, monkeypatch):
    "Daily merges into a part are done for all tickers at once from the footers' last rows; reports and bars equal the one-by-one merge, run after run."
    import stock_nbs.ingest as ing
    tickers = [f'T{i:02d}.NS' for i in range(12)] + ['AAPL', 'USDINR=X']
    over = {'universe.tickers': ' '.join(tickers), 'source.kind': 'synthetic', 'source.start': '2023-01-02', 'source.overlap_sessions': '5',
            'source.synthetic_faults': 'duplicate nan missing ohlc', 'source.synthetic_fault_rate': '0.05'}
    roots = {'panel': tmp_path/'panel', 'alone': tmp_path/'alone'}
    calls = []
    real = ing._panel_rows
    def counted(*a):
        done, left = real(*a); calls.append(len(done)); return done, left
    def alone(known, bars, tickers, start, end): return [], list(tickers)
    reports = {}
    for name, root in roots.items():
        monkeypatch.setattr(ing, '_panel_rows', counted if name == 'panel' else alone)
        days = ['2024-03-01', '2024-03-04', '2024-03-05', '2024-03-06']
        for i, day in enumerate(days):  # a revising vendor: the second run's seed rewrites the overlap's values
            s = load_settings(None, env={}, overrides={**over, 'storage.data_dir': str(root), 'source.synthetic_seed': str(42 + (i == 1))})
            reports[name, day] = ingest(s, run_date=day, progress=False)
    assert sum(calls) > 30  # the panel path did the merges after the first run
    for day in days: pd.testing.assert_frame_equal(reports['panel', day], reports['alone', day])
    assert reports['panel', days[1]].values_changed.sum() > 0 and reports['panel', days[2]].rows_added.sum() > 0
    for t in tickers:
        a, b = Store(roots['panel']).read('bronze', '1d', t), Store(roots['alone']).read('bronze', '1d', t)
        pd.testing.assert_frame_equal(a.drop(columns='fetched_at'), b.drop(columns='fetched_at'))
