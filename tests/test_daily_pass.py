"""The daily pass equals a full rebuild of the same day: over several days, vendor revisions of the overlap (an FX
revision among them), faulty bars and a ticker added later; and a re-run of a day commits nothing."""
import shutil
import numpy as np, pandas as pd, polars as pl
import pytest
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform
from stock_nbs.quality import FACT_COLUMNS
from stock_nbs.store import Store

TICKERS = 'TCS.NS INFY.NS SBIN.NS AAPL MSFT USDINR=X'
KEYS = {'bronze': ['ticker', 'date', 'seq'], 'silver': ['ticker', 'date'], 'rejects': ['ticker', 'date', 'seq'], 'gold': ['ticker', 'date']}


def settings(root, seed=42, tickers=TICKERS):
    return load_settings(None, env={}, overrides={'universe.tickers': tickers, 'source.kind': 'synthetic', 'source.start': '2022-06-01',
                                                  'source.synthetic_faults': 'ohlc nan duplicate placeholder spike missing', 'source.synthetic_fault_rate': '0.03',
                                                  'source.synthetic_seed': str(seed), 'storage.data_dir': str(root), 'quality.min_rows': '10'})


def assert_same_tables(day_root, full_root):
    "Every derived table of the day pass equals the full rebuild's: non-float columns identical, floats within 1e-9 relative."
    for layer in ('silver', 'rejects', 'gold'):
        a, b = (Store(r).read(layer, '1d') for r in (day_root, full_root))
        if a is None and b is None: continue                                # (no rule dropped a row)
        a, b = a.sort(KEYS[layer]), b.sort(KEYS[layer])
        assert a.select(KEYS[layer]).equals(b.select(KEYS[layer])), layer
        for c, t in a.schema.items():
            if t.is_float(): np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-9, atol=0, err_msg=f'{layer}.{c}')
            else: assert a[c].equals(b[c]), f'{layer}.{c}'
    qa, qb = (Store(r).read('quality', '1d').sort('reported_at').group_by('ticker').last().sort('ticker').drop('run_id', 'reported_at') for r in (day_root, full_root))
    assert qa.equals(qb)


def test_days_with_revisions_an_fx_revision_and_a_new_ticker_equal_full_rebuilds(tmp_path):
    root = tmp_path/'day'
    days = [('2024-06-24', 42, TICKERS), ('2024-06-25', 43, TICKERS),          # the vendor revises every bar of the overlap, USDINR=X too
            ('2024-06-26', 42, TICKERS + ' ITC.NS'), ('2024-06-27', 42, TICKERS + ' ITC.NS')]   # revised back; a ticker added
    for i, (day, seed, tickers) in enumerate(days):
        s = settings(root, seed, tickers)
        rep = ingest(s, run_date=day, progress=False)
        if i == 1: assert rep.set_index('ticker').loc['USDINR=X', 'values_changed'] > 0 and (rep.values_changed > 0).all()
        res = transform(s, progress=False, today=day)
        assert res.gate == [] and (res.summary['pass'] == 'full' if i == 0 else res.summary['pass']['recomputed'] == len(tickers.split()))
        full = tmp_path/f'full{i}'
        shutil.copytree(root, full)
        transform(settings(full, seed, tickers), progress=False, today=day, full=True)
        assert_same_tables(root, full)


def test_rerunning_a_day_commits_nothing(tmp_path):
    s = settings(tmp_path/'d')
    for day in ('2024-06-26', '2024-06-27'): ingest(s, run_date=day, progress=False); transform(s, progress=False, today=day)
    before = Store(s.data_dir).versions('1d')
    ingest(s, run_date='2024-06-27', progress=False)
    res = transform(s, progress=False, today='2024-06-27')
    after = Store(s.data_dir).versions('1d')
    assert res.summary['pass']['recomputed'] == 0
    assert {k: after[k] for k in ('bronze/1d', 'silver/1d', 'rejects/1d', 'gold/1d')} == {k: before[k] for k in ('bronze/1d', 'silver/1d', 'rejects/1d', 'gold/1d')}
    assert after['quality/1d'] == before['quality/1d'] + 1                    # the day's report, appended


def test_changed_rule_settings_rebuild_everything(tmp_path):
    s = settings(tmp_path/'d')
    ingest(s, run_date='2024-06-26', progress=False); transform(s, progress=False, today='2024-06-26')
    strict = load_settings(None, env={}, overrides={**{k: v for k, v in [('universe.tickers', TICKERS), ('source.kind', 'synthetic'), ('source.start', '2022-06-01'),
                                                    ('storage.data_dir', str(tmp_path/'d')), ('quality.min_rows', '10')]}, 'features.sma_periods': '20 100'})
    res = transform(strict, progress=False, today='2024-06-26')
    assert res.summary['pass'] == 'full' and 'sma_100' in Store(tmp_path/'d').read('gold', '1d').columns


def test_an_intraday_day_equals_a_full_rebuild(tmp_path):
    root = tmp_path/'day'
    over = {'universe.tickers': 'TCS.NS AAPL', 'source.kind': 'synthetic', 'source.intraday_days': '10', 'quality.min_rows': '10', 'storage.data_dir': str(root)}
    s = load_settings(None, env={}, overrides=over)
    for i, day in enumerate(('2024-06-26', '2024-06-27', '2024-06-28')):
        fx_seed = {'source.synthetic_seed': '43'} if i == 2 else {}                # the last day, the vendor revises the FX series' overlap
        ingest(load_settings(None, env={}, overrides={**over, **fx_seed}), ['USDINR=X'], run_date=day, interval='1d', progress=False)   # the daily FX US bars convert with
        ingest(s, run_date=day, interval='15m', progress=False)
        res = transform(s, interval='15m', progress=False, today=day)
        assert res.gate == [] and (res.tickers.status == 'ok').all()
    full = tmp_path/'full'
    shutil.copytree(root, full)
    transform(load_settings(None, env={}, overrides={**over, 'storage.data_dir': str(full)}), interval='15m', progress=False, today='2024-06-28', full=True)
    for layer in ('silver', 'gold'):
        a, b = (Store(r).read(layer, '15m').sort('ticker', 'date') for r in (root, full))
        assert len(a) == len(b) > 0 and a.select('ticker', 'date').equals(b.select('ticker', 'date'))
        np.testing.assert_allclose(a['close'].to_numpy(), b['close'].to_numpy(), rtol=1e-12)
        if layer == 'silver': assert a.select(FACT_COLUMNS).equals(b.select(FACT_COLUMNS))   # each bar's quality facts
        if layer == 'gold': np.testing.assert_allclose(a['rsi_14'].to_numpy(), b['rsi_14'].to_numpy(), rtol=1e-9)
    aapl = Store(root).read('silver', '15m', pl.col('ticker') == 'AAPL')
    assert aapl['fx_rate'].n_unique() > 1 and (aapl['fx_rate'] > 50).all()


@pytest.mark.parametrize('full', [False, True])
def test_changed_rules_rebuild_the_tables_other_tickers_too(tmp_path, full):
    s = settings(tmp_path/'d')
    ingest(s, run_date='2024-06-26', progress=False); transform(s, progress=False, today='2024-06-26')
    longer = load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'source.kind': 'synthetic', 'source.start': '2022-06-01',
                                                    'storage.data_dir': str(tmp_path/'d'), 'quality.min_rows': '10', 'features.sma_periods': '20 100'})
    res = transform(longer, ['TCS.NS'], progress=False, today='2024-06-26', full=full)   # one ticker asked for: one formula must still hold for all
    gold = Store(tmp_path/'d').read('gold', '1d')
    assert res.summary['pass'] == 'full' and list(res.tickers.ticker) == ['TCS.NS']
    assert gold.group_by('ticker').agg(pl.col('sma_100').is_not_null().sum())['sma_100'].min() > 0 and gold['ticker'].n_unique() == len(TICKERS.split())


BUSINESS_DAYS = pd.bdate_range('2024-01-01', '2024-06-28')


def csv_days(tmp_path, close, days, check=lambda day, silver: None):
    "TCS.NS with these closes (one per business day of 2024's first half) from a vendor CSV, ingested and transformed up to each of `days`; `check` sees each day's silver; the last result."
    vendor, root = tmp_path/'vendor', tmp_path/'day'
    vendor.mkdir()
    bars = pd.DataFrame({'Date': BUSINESS_DAYS.strftime('%Y-%m-%d'), 'Open': close, 'High': close * 1.01, 'Low': close * 0.99, 'Close': close, 'Volume': 1000})
    over = {'universe.tickers': 'TCS.NS', 'source.kind': 'csv', 'source.csv_dir': str(vendor), 'source.start': '2024-01-01', 'quality.min_rows': '10'}
    cfg = lambda folder: load_settings(None, env={}, overrides={**over, 'storage.data_dir': str(folder)})
    for day in days:
        bars[bars.Date <= day].to_csv(vendor/'TCS.NS.csv', index=False)
        ingest(cfg(root), run_date=day, progress=False)
        res = transform(cfg(root), progress=False, today=day)
        check(day, Store(root).read('silver', '1d').sort('date'))
    shutil.copytree(root, tmp_path/'full')
    transform(cfg(tmp_path/'full'), progress=False, today=days[-1], full=True)
    assert_same_tables(root, tmp_path/'full')
    return res


def walk(seed=5):
    return 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, len(BUSINESS_DAYS))))


def test_a_new_bar_that_makes_a_stale_run_rewrites_the_facts_of_the_rows_before_it(tmp_path):
    close = walk()
    close[-5:] = close[-5]                                                  # four equal closes, then a fifth: a run of `stale_sessions` (5)
    stale = {'2024-06-27': [False] * 4, '2024-06-28': [True] * 5}           # the day makes the four rows before it stale
    def check(day, silver): assert silver['q_stale'].tail(len(stale[day])).to_list() == stale[day]
    res = csv_days(tmp_path, close, list(stale), check)
    assert res.summary['pass']['recomputed'] == 1 and res.quality.loc[0, 'stale_runs'] == 1


def test_a_stale_run_reaching_into_the_rewritten_rows_from_before_them_keeps_its_facts(tmp_path):
    "The day rewrites silver from 40 rows before the new bar; a stale run ending there began earlier, so their facts are read from further back."
    close = walk(6)
    close[-53:-40] = close[-53]                                             # 13 equal closes, the last two among the 41 rows the day rewrites
    res = csv_days(tmp_path, close, ['2024-06-27', '2024-06-28'])
    assert res.quality.loc[0, 'stale_runs'] == 1 and res.quality.loc[0, 'stale_sessions'] == 13


def last_write(store, layer):
    "The operation of a table's newest commit that wrote rows (a pass also sets the gold table's watermark property)."
    return next(h['operation'] for h in store.table(layer, '1d').history(3) if h['operation'] != 'SET TBLPROPERTIES')


def test_a_day_of_only_new_bars_appends_to_bronze_and_gold_and_equals_a_rebuild(tmp_path):
    "New bars and nothing revised: bronze and gold get an append (a MERGE would read the touched partitions to find no match)."
    clean = lambda root: load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'source.kind': 'synthetic', 'source.start': '2022-06-01',
                                                                'storage.data_dir': str(root), 'quality.min_rows': '10'})
    s = clean(tmp_path/'day')
    for day in ('2024-06-26', '2024-06-27'): ingest(s, run_date=day, progress=False); transform(s, progress=False, today=day)
    store = Store(s.data_dir)
    assert [last_write(store, layer) for layer in ('bronze', 'gold')] == ['WRITE', 'WRITE']
    assert store.read('gold', '1d').group_by('ticker').agg(pl.col('date').max())['date'].unique().to_list() == [pd.Timestamp('2024-06-27').date()]
    shutil.copytree(tmp_path/'day', tmp_path/'full')
    transform(clean(tmp_path/'full'), progress=False, today='2024-06-27', full=True)
    assert_same_tables(tmp_path/'day', tmp_path/'full')
