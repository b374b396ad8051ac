"""CSV source: every Yahoo form, vendor folders through settings alone, and bad files."""
import pandas as pd, numpy as np, polars as pl
import pytest
from stock_nbs.config import load_settings, symbol_of
from stock_nbs.sources import CsvSource, SourceError, make_source, read_bar_csv, BRONZE_COLUMNS
from stock_nbs.ingest import ingest
from stock_nbs.store import Store

ROWS = [('2024-01-02', 100.0, 105.0, 99.0, 104.0, 103.5, 1000), ('2024-01-03', 104.0, 106.0, 101.0, 102.0, 101.5, 1500)]


def yahoo_frame(tickers):
    "A frame laid out as yf.download(..., auto_adjust=False) returns it: columns Price x Ticker, index Date."
    idx = pd.DatetimeIndex([r[0] for r in ROWS], name='Date')
    per = {t: pd.DataFrame({'Adj Close': [r[5] for r in ROWS], 'Close': [r[4] for r in ROWS], 'High': [r[2] for r in ROWS],
                            'Low': [r[3] for r in ROWS], 'Open': [r[1] for r in ROWS], 'Volume': [r[6] for r in ROWS]}, index=idx)
           for t in tickers}
    d = pd.concat(per.values(), axis=1, keys=per.keys(), names=['Ticker', 'Price'])
    d.columns = d.columns.swaplevel(0, 1)
    return d.sort_index(level=0, axis=1)


def check(df, adj=True):
    assert df.date.tolist() == [pd.Timestamp('2024-01-02'), pd.Timestamp('2024-01-03')]
    assert df.open.tolist() == [100, 104] and df.high.tolist() == [105, 106] and df.low.tolist() == [99, 101]
    assert df.close.tolist() == [104, 102] and df.volume.tolist() == [1000, 1500]
    assert df.adj_close.tolist() == ([103.5, 101.5] if adj else [104, 102])


def test_yahoo_export_in_canonical_order(tmp_path):
    (tmp_path/'TCS.NS.csv').write_text('Date,Open,High,Low,Close,Adj Close,Volume\n' + '\n'.join(','.join(map(str, r[:7])) for r in ROWS))
    check(read_bar_csv(tmp_path/'TCS.NS.csv', 'TCS.NS'))


def test_yahoo_export_any_order_without_adj_close(tmp_path):
    (tmp_path/'x.csv').write_text('Volume,Low,Date,Close,High,Open\n' + '\n'.join(f"{r[6]},{r[3]},{r[0]},{r[4]},{r[2]},{r[1]}" for r in ROWS))
    check(read_bar_csv(tmp_path/'x.csv', 'TCS.NS'), adj=False)


def test_yfinance_three_row_header_written_by_to_csv(tmp_path):
    yahoo_frame(['TCS.NS']).to_csv(tmp_path/'TCS.NS.csv')
    head = (tmp_path/'TCS.NS.csv').read_text().splitlines()[:3]
    assert head[0].startswith('Price,') and head[1].startswith('Ticker,') and head[2].startswith('Date,')
    check(read_bar_csv(tmp_path/'TCS.NS.csv', 'TCS.NS'))


def test_yfinance_single_level_export(tmp_path):
    yahoo_frame(['TCS.NS']).droplevel('Ticker', axis=1).to_csv(tmp_path/'TCS.NS.csv')
    check(read_bar_csv(tmp_path/'TCS.NS.csv', 'TCS.NS'))


def test_upstox_folder_loads_through_settings_alone(upstox_dir, write_settings, tmp_path):
    p = write_settings({'universe': {'tickers': 'RELIANCE.NS TCS.NS ETERNAL.NS M&M.NS BAJAJ-AUTO.NS JIOFIN.NS'},
                        'source': {'kind': 'csv', 'csv_dir': str(upstox_dir), 'csv_pattern': '{symbol}_*.csv',
                                   'csv_columns': 'timestamp=date', 'start': '2020-10-01'},
                        'storage': {'data_dir': str(tmp_path/'data')}})
    s = load_settings(p, env={})
    rep = ingest(s, run_date='2025-09-30', progress=False)
    assert rep.status.tolist() == ['updated'] * 6, rep.error.tolist()
    store = Store(s.data_dir)
    bronze = lambda t: store.read('bronze', '1d', pl.col('ticker') == t).sort('date', 'seq').to_pandas().assign(date=lambda d: pd.to_datetime(d.date))
    rel = bronze('RELIANCE.NS')
    raw = pd.read_csv(next(upstox_dir.glob('RELIANCE_*.csv')))
    assert len(rel) == len(raw) == 1241
    assert rel.date.iloc[0] == pd.Timestamp('2020-10-01') and rel.date.iloc[-1] == pd.Timestamp('2025-09-30')
    assert rel.date.dt.hour.eq(0).all() and rel.date.dt.tz is None       # IST midnight -> the IST trading date
    np.testing.assert_array_equal(rel.close.to_numpy(), raw.close.to_numpy())
    np.testing.assert_array_equal(rel.volume.to_numpy(), raw.volume.to_numpy())
    assert (rel.adj_close == rel.close).all() and list(rel.columns) == ['ticker', 'date', 'seq', *BRONZE_COLUMNS[1:], 'year']
    assert bronze('ETERNAL.NS').date.iloc[0] == pd.Timestamp('2021-07-23')
    assert bronze('JIOFIN.NS').date.iloc[0] == pd.Timestamp('2023-08-21')


def test_whole_upstox_folder(upstox_dir):
    src = CsvSource(upstox_dir, '{symbol}_*.csv', {'timestamp': 'date'})
    tickers = sorted(f"{p.name.split('_')[0]}.NS" for p in upstox_dir.glob('*_2020-10-01_to_2025-09-30.csv'))
    res = src.fetch(tickers, '2020-01-01', '2025-12-31')
    assert len(tickers) == 50 and not res.failed
    assert all(df.date.is_monotonic_increasing and not df.date.duplicated().any() for df in res.bars.values())


@pytest.mark.parametrize('content,message', [
    ('Date,Open,High,Low,Close\n2024-01-02,1,1,1,1\n', 'missing column(s) volume; found Date, Open, High, Low, Close'),
    ('Day,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,1\n', 'missing column(s) date'),
    ('Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,1\nyesterday,1,1,1,1,1\n', "unparseable date(s) in rows 3: 'yesterday'"),
    ('Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1.x,1\n', "column close has non-numeric value(s) '1.x' in rows 2"),
    ('Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,-3,1\n2024-01-03,1,1,1,1,1\n', 'negative price or volume on 2024-01-02'),
    ('Date,Open,High,Low,Close,Volume\n2024-01-02,1,1,1,1,1\n2024-01-03,1,1,1,1,1\n2024-01-02,2,2,2,2,2\n', 'duplicate dates 2024-01-02'),
    ('', 'not a readable CSV file'),
])
def test_bad_vendor_files_fail_their_ticker_with_a_clear_message_and_write_nothing(tmp_path, content, message):
    vendor = tmp_path/'vendor'; vendor.mkdir()
    (vendor/'BAD.NS.csv').write_text(content)
    pd.DataFrame({'Date': ['2024-01-02'], 'Open': [1], 'High': [1], 'Low': [1], 'Close': [1], 'Volume': [1]}).to_csv(vendor/'OK.NS.csv', index=False)
    s = load_settings(None, env={}, overrides={'universe.tickers': 'BAD.NS OK.NS', 'source.kind': 'csv', 'source.csv_dir': str(vendor),
                                               'source.start': '2024-01-01', 'storage.data_dir': str(tmp_path/'data')})
    rep = ingest(s, run_date='2024-01-05', progress=False).set_index('ticker')
    assert rep.loc['BAD.NS', 'status'] == 'failed' and message in rep.loc['BAD.NS', 'error']
    assert str(vendor/'BAD.NS.csv') in rep.loc['BAD.NS', 'error']
    assert rep.loc['OK.NS', 'status'] == 'updated'
    assert Store(s.data_dir).tickers('bronze', '1d') == ['OK.NS']
    assert not list((tmp_path/'data'/'bronze'/'1d').glob('.*tmp'))


def test_missing_file_names_the_path_and_the_pattern(tmp_path):
    res = CsvSource(tmp_path, '{symbol}_*.csv').fetch(['SBIN.NS'], '2024-01-01', '2024-12-31')
    assert res.failed['SBIN.NS'] == (f"SBIN.NS: no file {tmp_path}/SBIN_*.csv (pattern [source] csv_pattern = {{symbol}}_*.csv); "
                                     "without a file for it, leave it out of [universe] tickers (or pass --tickers)")


def test_missing_folder_is_a_settings_error(tmp_path):
    s = load_settings(None, env={}, overrides={'source.kind': 'csv', 'source.csv_dir': str(tmp_path/'nope')})
    with pytest.raises(SourceError, match=r'CSV folder .*nope does not exist; set \[source\] csv_dir'):
        make_source(s)
