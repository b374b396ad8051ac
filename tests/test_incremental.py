"""The windows a daily transform keeps continue the next day exactly: advancing them by the day's bronze part gives the gold and counts a full pass gives."""
import json
import pandas as pd
import pytest
from stock_nbs.config import load_settings
from stock_nbs.ingest import ingest
from stock_nbs.pipeline import transform, load_windows, _fx_silver
from stock_nbs.incremental import advance
from stock_nbs.store import Store

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
        res = transform(s, progress=False, today=day)
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
            pd.testing.assert_frame_equal(getattr(kept, k), getattr(saved, k), check_dtype=False)
        kept.tickers['parts_seq'] = saved.tickers.parts_seq.to_numpy()
