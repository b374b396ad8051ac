"""The windows a daily transform keeps continue the next day exactly: advancing them by the day's bronze part gives the gold and counts a full pass gives,
and a daily transform that goes on from them leaves every output as a full pass would."""
import json, shutil
import numpy as np, pandas as pd
import pytest
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform, load_windows, _fx_silver
from stock_nbs.incremental import advance
from stock_nbs.store import Store, load_features

TICKERS = 'TCS.NS INFY.NS SBIN.NS AAPL MSFT USDINR=X'


def settings(root, **over):
    return load_settings(None, env={}, overrides={'universe.tickers': TICKERS, 'source.kind': 'synthetic', 'source.start': '2022-01-03',
                                                  'source.synthetic_faults': 'ohlc nan duplicate placeholder spike missing',
                                                  'source.synthetic_fault_rate': '0.02', 'storage.data_dir': str(root), 'storage.fsync': 'false',
                                                  'quality.min_rows': '100', **over})


@pytest.fixture(scope='module')
def store_with_windows(tmp_path_factory):
    root = tmp_path_factory.mktemp('incremental')
    s = settings(root)
    ingest(s, run_date='2024-06-14', progress=False); transform(s, progress=False, today='2024-06-14')
    return s, load_windows(Store(root), s, '1d')


def test_a_daily_transform_keeps_a_window_for_every_ticker_with_history(store_with_windows):
    s, kept = store_with_windows
    assert sorted(kept.tickers.ticker) == sorted(TICKERS.split())
    assert (kept.bronze.groupby('ticker').size() >= s.clean['outlier_window']).all()
    assert kept.tickers.parts_seq.max() == 0  # first ingest: whole files, no part yet


def test_windows_kept_under_other_settings_are_not_read(store_with_windows):
    s, _ = store_with_windows
    assert load_windows(Store(s.data_dir), settings(s.data_dir, **{'clean.outlier_mad': '8'}), '1d') is None
    assert load_windows(Store(s.data_dir), settings(s.data_dir, **{'features.sma_periods': '20 100'}), '1d') is None


def test_advancing_the_kept_windows_by_the_next_days_parts_gives_the_full_pass(store_with_windows):
    s, kept = store_with_windows
    st = Store(s.data_dir)
    for day in ('2024-06-17', '2024-06-18'):
        ingest(s, run_date=day, progress=False)
        parts = st.read_parts('bronze', '1d', after=kept.tickers.parts_seq.max())
        assert len(parts) >= 1 and set(parts[-1][0]) == set(TICKERS.split())
        adv = advance(kept, parts[-1:], s.clean, s.features, _fx_silver(st, s, '1d'), s.universe.base_currency, s.universe.fx_ticker)
        res = transform(s, progress=False, today=day, full=True)
        assert adv.left == {} and sorted(adv.since) == sorted(TICKERS.split())
        for t, since in adv.since.items():
            gold = st.read('gold', '1d', t)
            assert since <= parts[-1][0][t] < gold.date.iloc[-1] + pd.Timedelta(days=1)
            pd.testing.assert_frame_equal(adv.gold[adv.gold.ticker == t].reset_index(drop=True), gold[gold.date >= since].reset_index(drop=True))
            silver = st.read('silver', '1d', t)
            pd.testing.assert_frame_equal(adv.silver[adv.silver.ticker == t].drop(columns='ticker').reset_index(drop=True),
                                          silver[silver.date >= since].reset_index(drop=True), check_dtype=False)
        counts = res.quality.set_index('ticker').clean_counts
        assert adv.counts == {t: {k: v for k, v in json.loads(counts[t]).items() if k != 'gold_rows'} for t in adv.since}
        kept = adv.kept
        saved = load_windows(st, s, '1d')  # the day's full pass kept the same windows the advance moved to
        for k in ('bronze', 'silver'):
            pd.testing.assert_frame_equal(getattr(kept, k), getattr(saved, k))
        kept.tickers['parts_seq'] = saved.tickers.parts_seq.to_numpy()


def same_outputs(day_root, day_res, s, day):
    "A full pass over a copy of the data root the day pass left gives the same silver, gold, dataset, quality, gate and windows."
    ref_root = day_root.parent / (day_root.name + '_full')
    shutil.rmtree(ref_root, ignore_errors=True); shutil.copytree(day_root, ref_root)
    r = settings(ref_root, **GATE)
    ref = transform(r, progress=False, today=day, full=True)
    a, b = Store(day_root), Store(ref_root)
    for t in TICKERS.split():
        for layer in ('silver', 'gold'):
            pd.testing.assert_frame_equal(a.read(layer, '1d', t), b.read(layer, '1d', t))
    pd.testing.assert_frame_equal(load_features(settings=s), load_features(settings=r))
    pd.testing.assert_frame_equal(day_res.quality, ref.quality)
    pd.testing.assert_frame_equal(day_res.tickers, ref.tickers)
    assert {k: v for k, v in day_res.summary.items() if k != 'pass'} == {k: v for k, v in ref.summary.items() if k != 'pass'}
    assert day_res.gate == ref.gate and len(ref.gate) == 2 and 'High < Low' in ref.gate[1]  # rows, and OHLC breaks the silver step flags
    kept_a, kept_b = load_windows(a, s, '1d'), load_windows(b, r, '1d')
    for k in ('tickers', 'bronze', 'silver'):
        pd.testing.assert_frame_equal(getattr(kept_a, k).drop(columns=['tail', 'a_tail'], errors='ignore'), getattr(kept_b, k).drop(columns=['tail', 'a_tail'], errors='ignore'))
    for k in ('tail', 'a_tail'):  # the indicator states, at each window's cut and near its end
        np.testing.assert_array_equal(np.stack(list(kept_a.tickers[k])), np.stack(list(kept_b.tickers[k])))
    assert b.parts('silver', '1d') == [] and b.parts('gold', '1d') == []  # the full pass folded the day parts into the files and the dataset
    return ref


GATE = {'clean.ohlc': 'flag', 'quality.min_rows': str(10**7)}  # the gate fails on both counts: its view of the dataset is compared too


@pytest.fixture(scope='module')
def day_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('day_pass')
    s = settings(root, **GATE)
    ingest(s, run_date='2024-06-14', progress=False); transform(s, progress=False, today='2024-06-14')
    return root


def test_a_daily_transform_goes_on_from_the_windows_and_leaves_what_a_full_pass_leaves(day_root):
    s = settings(day_root, **GATE)
    for day in ('2024-06-17', '2024-06-18'):
        ingest(s, run_date=day, progress=False)
        res = transform(s, progress=False, today=day)
        assert res.summary['pass'] == {'continued': 6, 'advanced': 6, 'full': 0}
        assert len(Store(day_root).parts('gold', '1d')) >= 1  # the day's gold went into a part, not into every file and the dataset
        same_outputs(day_root, res, s, day)


def test_an_fx_revision_before_the_new_rows_sends_the_usd_tickers_to_the_full_pass(day_root):
    s, st = settings(day_root, **GATE), Store(day_root)
    ingest(s, run_date='2024-06-19', progress=False)
    fx = st.read('bronze', '1d', 'USDINR=X')
    since = fx.date.iloc[-20]
    st.append({'USDINR=X': (fx[fx.date >= since].assign(close=lambda d: d.close * 1.001), since)}, 'bronze', '1d')  # the vendor revises four weeks of FX
    res = transform(s, progress=False, today='2024-06-19')
    assert res.summary['pass'] == {'continued': 4, 'advanced': 4, 'full': 2}  # AAPL and MSFT
    same_outputs(day_root, res, s, '2024-06-19')


def test_a_rewritten_bronze_file_makes_the_day_a_full_pass_that_folds_the_day_parts(day_root):
    from stock_nbs.ingest import compact
    s, st = settings(day_root, **GATE), Store(day_root)
    assert st.parts('gold', '1d')  # the days before left parts
    compact(st, '1d', 1)
    res = transform(s, progress=False, today='2024-06-19')
    assert res.summary['pass'] == 'full'
    assert st.parts('silver', '1d') == [] and st.parts('gold', '1d') == [] and st.parts('bronze', '1d') == []


def test_lost_kept_gaps_make_the_day_a_full_pass_that_keeps_them_again(day_root, caplog):
    s, st = settings(day_root, **GATE), Store(day_root)
    ingest(s, run_date='2024-06-20', progress=False)
    shutil.rmtree(day_root/'kept'/'1d'/'gaps')
    with caplog.at_level('WARNING', logger='stock_nbs.pipeline'):
        assert transform(s, progress=False, today='2024-06-20').summary['pass'] == 'full'
    assert 'kept gaps' in caplog.text and 'full pass' in caplog.text
    ingest(s, run_date='2024-06-21', progress=False)
    res = transform(s, progress=False, today='2024-06-21')
    assert res.summary['pass'] == {'continued': 6, 'advanced': 6, 'full': 0}
    same_outputs(day_root, res, s, '2024-06-21')


def test_unreadable_kept_windows_make_the_day_a_full_pass_with_a_warning(day_root, caplog):
    s = settings(day_root, **GATE)
    ingest(s, run_date='2024-06-24', progress=False)
    (day_root/'kept'/'1d'/'tickers.arrow').write_bytes(b'not an arrow file')
    with caplog.at_level('WARNING', logger='stock_nbs.pipeline'):
        assert transform(s, progress=False, today='2024-06-24').summary['pass'] == 'full'
    assert 'unreadable' in caplog.text and 'tickers.arrow' in caplog.text
    ingest(s, run_date='2024-06-25', progress=False)
    assert transform(s, progress=False, today='2024-06-25').summary['pass'] == {'continued': 6, 'advanced': 6, 'full': 0}
