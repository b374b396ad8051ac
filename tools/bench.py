"""`make bench`: cost per stage of the pipeline on synthetic universes; writes reports/bench.json and reports/bench.md.

Each universe size runs in its own process so its peak memory is its own. Timings are wall seconds on this
machine; targets (2-core machine) are printed beside them. Not part of the test suite: speed is measured here,
not asserted.
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd

REPO = Path(__file__).resolve().parents[1]
END = pd.Timestamp('2025-11-20')          # a fixed run date: results comparable between runs of the benchmark


def settings(root, n, years=10, **over):
    from stock_nbs.config import load_settings
    tick = ' '.join(f'B{i:04d}.NS' for i in range(n))
    return load_settings(None, env={}, overrides={'universe.tickers': tick, 'source.kind': 'synthetic', 'storage.data_dir': str(root),
                                                  'source.start': str((END - pd.DateOffset(years=years)).date()), 'quality.min_rows': '100', **over})


def peak_mb():
    return round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024, 1)


def one(n, root, incremental, years=10):
    "Full rebuild of n tickers x `years` years (and optionally an incremental day): stage timings and peak memory."
    from stock_nbs.ingest import ingest
    from stock_nbs.pipeline import transform
    s = settings(root, n, years)
    out = {}
    t0 = time.perf_counter(); rep = ingest(s, run_date=END, progress=False); out['ingest'] = time.perf_counter() - t0
    t0 = time.perf_counter(); res = transform(s, progress=False, today=END); out['transform_total'] = time.perf_counter() - t0
    out.update({f'transform.{k}': v for k, v in res.timings.items()})
    out['full_total'] = out['ingest'] + out['transform_total']
    out['rows_gold'] = int(res.tickers.gold_rows.sum()); out['peak_rss_mb'] = peak_mb()
    if incremental:
        day = END + pd.offsets.BDay(1)
        t0 = time.perf_counter(); ingest(s, run_date=day, progress=False); a = time.perf_counter() - t0
        t0 = time.perf_counter(); inc = transform(s, progress=False, today=day); b = time.perf_counter() - t0
        out.update({f'incremental.{k}': v for k, v in inc.timings.items()}, incremental_pass=inc.summary['pass'])
        out.update(incremental_ingest=a, incremental_transform=b, incremental_total=a + b, incremental_share=(a + b) / out['full_total'])
        out.update(day_equals_full(s, day))
        out['incremental_equals_full_recompute'] = check_exact(s, day)
        from stock_nbs.sources import make_source
        from stock_nbs.store import Store
        from stock_nbs.ingest import compact
        t0 = time.perf_counter(); make_source(s).fetch(s.universe.tickers, END - pd.offsets.BDay(s.source.overlap_sessions - 1), day); out['incremental_fetch_only'] = time.perf_counter() - t0
        t0 = time.perf_counter(); compact(Store(root, s.storage.fsync), '1d', s.run.workers); out['compaction'] = time.perf_counter() - t0
        out['incremental_share_with_compaction'] = (a + b + out['compaction'] / s.storage.max_parts) / out['full_total']  # one compaction every max_parts runs
        out.update(fold_bench(s))
    return out


def day_equals_full(s, day):
    "The day pass's outputs (the whole consolidated dataset as `load_features` reads it, the quality report and summary) against a full pass of the same day over the same store."
    from stock_nbs.store import load_features
    from stock_nbs.pipeline import transform
    import pyarrow.parquet as pq
    quality = lambda: pq.read_table(Path(s.data_dir)/'quality'/'1d'/'ticker_report.parquet').to_pandas()
    summary = lambda: {k: v for k, v in json.loads((Path(s.data_dir)/'quality'/'1d'/'summary.json').read_text()).items() if k != 'pass'}
    before, q_before, s_before = load_features(settings=s), quality(), summary()
    t0 = time.perf_counter(); transform(s, progress=False, today=day, full=True); full = time.perf_counter() - t0
    return dict(incremental_full_pass_s=full, incremental_dataset_equals_full_pass=bool(before.equals(load_features(settings=s))),
                incremental_quality_equals_full_pass=bool(q_before.equals(quality()) and s_before == summary()), incremental_dataset_rows=len(before))


def fold_bench(s):
    "The core indicators of the day's bar of every ticker: recomputed over each whole series, and folded onto the state left by the day before; equal bit for bit?"
    from stock_nbs.store import Store
    from stock_nbs.features import indicator_fold, panel_fold
    st, f = Store(s.data_dir), s.features
    prices = [st.read('silver', '1d', t, columns=[f['price']])[f['price']].to_numpy(np.float64) for t in s.universe.tickers]
    states = [indicator_fold(p[:-1], f)[1] for p in prices]
    t0 = time.perf_counter(); full = [indicator_fold(p, f)[0] for p in prices]; t1 = time.perf_counter()
    folded = [indicator_fold(p[-1:], f, z)[0] for p, z in zip(prices, states)]; t2 = time.perf_counter()
    panel, _ = panel_fold(np.array([p[-1:] for p in prices]), f, states); t3 = time.perf_counter()
    same = all(np.array_equal(a[k][-1:], b[k], equal_nan=True) and np.array_equal(a[k][-1:], panel[k][i], equal_nan=True)
               for i, (a, b) in enumerate(zip(full, folded)) for k in a)
    return {'features_recompute_s': t1 - t0, 'features_fold_one_bar_s': t2 - t1, 'features_panel_fold_one_bar_s': t3 - t2, 'features_fold_equals_recompute': same}


def check_exact(s, day, k=25):
    "Gold after the incremental day (its bronze read with the day's part laid over) equals gold rebuilt from scratch up to that day, for a sample of tickers."
    from stock_nbs.ingest import ingest
    from stock_nbs.pipeline import transform
    from stock_nbs.store import Store
    sample = sorted(np.random.default_rng(0).choice(s.universe.tickers, k, replace=False))
    root = Path(tempfile.mkdtemp(prefix='bench_exact.'))
    try:
        fresh = settings(root, 0, **{'universe.tickers': ' '.join(sample), 'source.start': str(pd.Timestamp(s.source.start).date())})
        ingest(fresh, run_date=day, progress=False); transform(fresh, progress=False, today=day)
        return all(Store(s.data_dir).read('gold', '1d', t).equals(Store(root).read('gold', '1d', t)) for t in sample)
    finally: shutil.rmtree(root, ignore_errors=True)


def reads(root, n):
    "load_features latency from the n-ticker store."
    from stock_nbs.store import load_features
    s = settings(root, n)
    def best(f, k=15):
        ts = []
        for _ in range(k): t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
        return float(np.median(ts))
    return {'one_ticker_one_year_ms': 1000 * best(lambda: load_features('B0042.NS', start=END - pd.DateOffset(years=1), end=END, settings=s)),
            'all_tickers_one_month_ms': 1000 * best(lambda: load_features(start=END - pd.DateOffset(months=1), end=END, settings=s), 5)}


def sync_bench(root, n_rows=1_000_000):
    "Rows/s of syncing ~1M rows into a throwaway local PostgreSQL, and the time of a no-op re-sync."
    from stock_nbs.config import Secrets
    from stock_nbs.sync import sync
    pgdir = tempfile.mkdtemp(prefix='bench_pg.')
    try:
        url = subprocess.run([str(REPO/'tools'/'pg.sh'), 'start', pgdir], capture_output=True, text=True, check=True).stdout.strip()
    except subprocess.CalledProcessError as e:
        return {'error': f'no PostgreSQL: {e.stderr.strip()}'}
    try:
        s = settings(root, 5000)
        per = 2609  # rows per ticker in 10 years of business days
        tickers = s.universe.tickers[:int(np.ceil(n_rows / per))]
        t0 = time.perf_counter(); rep = sync(s, Secrets({'DATABASE_URL': url}), tickers=tickers); full = time.perf_counter() - t0
        t0 = time.perf_counter(); again = sync(s, Secrets({'DATABASE_URL': url}), tickers=tickers); noop = time.perf_counter() - t0
        return {'rows': rep.sent, 'seconds': full, 'rows_per_s': rep.sent / full, 'noop_resync_s': noop, 'noop_sent': again.sent}
    finally:
        subprocess.run([str(REPO/'tools'/'pg.sh'), 'stop', pgdir]); shutil.rmtree(pgdir, ignore_errors=True)


def daily_run():
    "The default daily run (papermill notebook, default universe, synthetic) end to end, first and second time."
    root = Path(tempfile.mkdtemp(prefix='bench_run.'))
    ini = root/'settings.ini'
    ini.write_text((REPO/'settings.ini').read_text().replace('data_dir = data', f'data_dir = {root/"data"}')
                   .replace('runs_dir = runs', f'runs_dir = {root/"runs"}').replace('reports_dir = reports', f'reports_dir = {root/"reports"}'))
    cli = str(Path(sys.executable).with_name('stock-nbs'))
    out = {}
    for k in ('first_run_s', 'second_run_s'):
        t0 = time.perf_counter()
        p = subprocess.run([cli, 'run', '--settings', str(ini), '--source', 'synthetic', '--date', str(END.date())], capture_output=True, text=True)
        out[k] = time.perf_counter() - t0
        if p.returncode: out['error'] = p.stdout[-500:] + p.stderr[-500:]
    shutil.rmtree(root, ignore_errors=True)
    return out


TARGETS = {'5000 full rebuild (s)': 120, '5000 peak RSS (MB)': 4096, 'incremental share of full': 0.15, 'sync rows/s': 50_000,
           'load_features one ticker-year (ms)': 100, 'default daily run (s)': 30}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--sizes', default='60,600,5000'); ap.add_argument('--one', type=int); ap.add_argument('--root'); ap.add_argument('--incremental', action='store_true')
    ap.add_argument('--years', type=int, default=10)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, Path(a.root), a.incremental, a.years))); return
    sizes = [int(x) for x in a.sizes.split(',')]
    res, roots = {'machine': dict(cores=os.cpu_count()), 'run_date': str(END.date())}, {}
    for n in sizes:
        roots[n] = Path(tempfile.mkdtemp(prefix=f'bench_{n}.'))
        cmd = [sys.executable, __file__, '--one', str(n), '--root', str(roots[n])] + (['--incremental'] if n == max(sizes) else [])
        print(f'full rebuild, {n} tickers x 10 years ...', flush=True)
        res[f'universe_{n}'] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    big = max(sizes)
    if big >= 1000:  # the same universe with one year of history: how much of the cost is history, how much is per ticker
        r1 = Path(tempfile.mkdtemp(prefix=f'bench_{big}_1y.'))
        print(f'full rebuild, {big} tickers x 1 year ...', flush=True)
        res[f'universe_{big}_1y'] = json.loads(subprocess.run([sys.executable, __file__, '--one', str(big), '--root', str(r1), '--years', '1'],
                                                              capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
        shutil.rmtree(r1, ignore_errors=True)
    print('reads ...', flush=True); res['load_features'] = reads(roots[big], big)
    if big >= 400: print('sync 1M rows ...', flush=True); res['sync'] = sync_bench(roots[big])
    print('daily run ...', flush=True); res['daily_run'] = daily_run()
    for r in roots.values(): shutil.rmtree(r, ignore_errors=True)
    u = res[f'universe_{big}']
    got = {'5000 full rebuild (s)': u['full_total'], '5000 peak RSS (MB)': u['peak_rss_mb'], 'incremental share of full': u.get('incremental_share'),
           'sync rows/s': res.get('sync', {}).get('rows_per_s'), 'load_features one ticker-year (ms)': res['load_features']['one_ticker_one_year_ms'],
           'default daily run (s)': res['daily_run'].get('second_run_s')}
    res['targets'] = {k: dict(target=TARGETS[k], measured=v, met=None if v is None else (v <= TARGETS[k] if 'rows/s' not in k else v >= TARGETS[k])) for k, v in got.items()}
    out = REPO/'reports'
    out.mkdir(exist_ok=True)
    (out/'bench.json').write_text(json.dumps(res, indent=1, default=float))
    lines = ['| stage | ' + ' | '.join(f'{n} tickers' for n in sizes) + ' |', '|---|' + '---|' * len(sizes)]
    for k in [k for k in res[f'universe_{sizes[0]}'] if isinstance(res[f'universe_{sizes[0]}'][k], (int, float)) and not isinstance(res[f'universe_{sizes[0]}'][k], bool)]:
        lines.append(f'| {k} | ' + ' | '.join(f"{res[f'universe_{n}'].get(k, float('nan')):.2f}" for n in sizes) + ' |')
    lines += ['', '| target | goal | measured | met |', '|---|---|---|---|']
    lines += [f"| {k} | {v['target']} | {v['measured'] if v['measured'] is None else round(v['measured'], 3)} | {v['met']} |" for k, v in res['targets'].items()]
    lines += ['', f"gold after the incremental day equals gold rebuilt from scratch (25 sampled tickers): {u.get('incremental_equals_full_recompute')}",
              f"incremental day: ingest {u.get('incremental_ingest', float('nan')):.1f} s (of which the synthetic source's fetch alone {u.get('incremental_fetch_only', float('nan')):.1f} s), "
              f"transform {u.get('incremental_transform', float('nan')):.1f} s; folding the bronze parts back (once every [storage] max_parts runs) {u.get('compaction', float('nan')):.1f} s",
              f"core indicators of the day's bar, {big} tickers, one process: recomputed over each whole series {u.get('features_recompute_s', float('nan')):.2f} s, "
              f"folded onto the kept state one ticker at a time {u.get('features_fold_one_bar_s', float('nan')):.2f} s, all tickers as one matrix (`panel_fold`) "
              f"{u.get('features_panel_fold_one_bar_s', float('nan')):.3f} s; equal bit for bit: {u.get('features_fold_equals_recompute')}",
              f"the incremental day's transform went on from the kept windows ({u.get('incremental_pass')}); the whole dataset it left ({u.get('incremental_dataset_rows')} rows, "
              f"as load_features reads it) equals a full pass of the same day: {u.get('incremental_dataset_equals_full_pass')}; quality report and summary too: "
              f"{u.get('incremental_quality_equals_full_pass')} (that full pass: {u.get('incremental_full_pass_s', float('nan')):.1f} s)",
              *([f"full rebuild {big} tickers x 1 year: {res[f'universe_{big}_1y']['full_total']:.1f} s (x 10 years: {u['full_total']:.1f} s)"] if f'universe_{big}_1y' in res else []),
              f"load_features all tickers x one month: {res['load_features']['all_tickers_one_month_ms']:.0f} ms",
              f"sync: {json.dumps(res.get('sync'), default=float)}", f"daily run: {json.dumps(res['daily_run'], default=float)}"]
    (out/'bench.md').write_text('\n'.join(lines) + '\n')
    print('\n'.join(lines)); print(f'\nresults: {out/"bench.json"}, {out/"bench.md"}')


if __name__ == '__main__':
    main()
