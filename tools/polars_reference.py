"""A plain polars implementation of the gold columns, the yardstick `make bench` measures stock_nbs against.

It reads the same bronze Delta table, applies basic cleaning and writes gold to its own Delta table with the
same Parquet settings, as a competent engineer would write it in an afternoon. What it leaves out, on purpose:
the outlier, spike and placeholder rules, rejected rows, flags and rule counts, the quality report and the output
gate, diffing (it rewrites or appends blindly), the indicator state a resumed day needs (its day recomputes the
smoothings from a 300-session window, so its RSI and MACD drift from a full rebuild's by up to ~1e-6), the run
table, locking and error handling.

    python tools/polars_reference.py rebuild BRONZE_TABLE GOLD_TABLE
    python tools/polars_reference.py append BRONZE_TABLE GOLD_TABLE NEW_ROWS.parquet
"""
import sys, time, datetime as dt
import polars as pl
from deltalake import write_deltalake, WriterProperties, ColumnProperties

KEYS = ColumnProperties(dictionary_enabled=True, statistics_enabled='CHUNK')
PLAIN = ColumnProperties(dictionary_enabled=False, statistics_enabled='NONE')


def writer(df):
    "The Parquet settings stock_nbs uses: statistics and dictionaries on key columns only."
    return WriterProperties(max_row_group_size=65536, compression='SNAPPY',
                            column_properties={c: KEYS if t in (pl.String, pl.Date, pl.Int32, pl.Int16) else PLAIN for c, t in df.schema.items()})


def clean(bronze: pl.LazyFrame) -> pl.LazyFrame:
    "Last print of a day, complete positive bars, high/low repaired from the bar's own prices, USD converted with the last USDINR=X close."
    b = bronze.sort('ticker', 'date', 'seq').unique(['ticker', 'date'], keep='last', maintain_order=True)
    b = b.drop_nulls(['open', 'high', 'low', 'close', 'volume']).filter(pl.min_horizontal('open', 'high', 'low', 'close') > 0)
    b = b.with_columns(high=pl.max_horizontal('open', 'high', 'low', 'close'), low=pl.min_horizontal('open', 'high', 'low', 'close'))
    fx = bronze.filter(pl.col('ticker') == 'USDINR=X').select('date', rate='close').sort('date')
    usd = ~pl.col('ticker').str.contains(r'\.(NS|BO)$|=X$')
    b = b.sort('date').join_asof(fx, on='date', strategy='backward').sort('ticker', 'date')
    return b.with_columns([pl.when(usd).then(pl.col(c) * pl.col('rate')).otherwise(pl.col(c)).alias(c) for c in ('open', 'high', 'low', 'close', 'adj_close')]).drop('rate')


def ema(x: pl.Expr, n: int, start: int, pos: pl.Expr) -> pl.Expr:
    "TA-Lib's EMA: the mean of n values at row `start + n - 1`, then the recursion."
    seeded = pl.when(pos == start + n - 1).then(x.rolling_mean(n).over('ticker')).when(pos >= start + n).then(x)
    return seeded.ewm_mean(alpha=2 / (n + 1), adjust=False).over('ticker')


def features(silver: pl.LazyFrame) -> pl.LazyFrame:
    "daily_return, sma_20, sma_50, rsi_14, macd, macd_signal, macd_hist, volatility; warm-up rows dropped."
    c, pos = pl.col('close'), pl.int_range(pl.len()).over('ticker')
    d = silver.with_columns(pos=pos, ret=(c / c.shift(1) - 1).over('ticker'), chg=c.diff().over('ticker'))
    wilder = lambda x: pl.when(pl.col('pos') == 14).then(x.rolling_mean(14).over('ticker')).when(pl.col('pos') > 14).then(x).ewm_mean(alpha=1 / 14, adjust=False).over('ticker')
    d = d.with_columns(sma_20=c.rolling_mean(20).over('ticker'), sma_50=c.rolling_mean(50).over('ticker'), volatility=pl.col('ret').rolling_std(20).over('ticker'),
                       gain=wilder(pl.col('chg').clip(lower_bound=0)), loss=wilder((-pl.col('chg')).clip(lower_bound=0)),
                       m=ema(c, 12, 14, pl.col('pos')) - ema(c, 26, 0, pl.col('pos')))
    d = d.with_columns(rsi_14=100 * pl.col('gain') / (pl.col('gain') + pl.col('loss')), macd_signal=ema(pl.col('m'), 9, 25, pl.col('pos')))
    d = d.with_columns(macd=pl.col('m'), macd_hist=pl.col('m') - pl.col('macd_signal'), daily_return='ret')
    return d.drop('pos', 'ret', 'chg', 'gain', 'loss', 'm', 'seq', 'source', 'fetched_at').filter(pl.col('sma_50').is_not_null() & pl.col('macd_signal').is_not_null())


def rebuild(bronze: str, gold: str):
    "The whole gold table from the whole bronze table, written in one overwrite."
    g = features(clean(pl.scan_delta(bronze))).collect()
    write_deltalake(gold, g.to_arrow(), mode='overwrite', partition_by=['year'], writer_properties=writer(g))


def append(bronze: str, gold: str, new_rows: str):
    "Append a day's bronze rows, recompute the last 300 sessions of every ticker, append the day's gold rows."
    new = pl.read_parquet(new_rows)
    write_deltalake(bronze, new.to_arrow(), mode='append', partition_by=['year'], writer_properties=writer(new))
    day = new['date'].min()
    window = pl.scan_delta(bronze).filter(pl.col('year') >= day.year - 2, pl.col('date') >= day - dt.timedelta(days=450))
    g = features(clean(window)).filter(pl.col('date') >= day).collect()
    write_deltalake(gold, g.to_arrow(), mode='append', partition_by=['year'], writer_properties=writer(g))


if __name__ == '__main__':
    t0 = time.perf_counter()
    {'rebuild': rebuild, 'append': append}[sys.argv[1]](*sys.argv[2:])
    print(f'{time.perf_counter() - t0:.3f}')
