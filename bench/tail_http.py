"""Reads while views flow in: the tail-cost curve, and reads during sustained ingest.

    python bench/tail_http.py [--database-url URL] [--redis-url URL] [--port P]
        [--requests N] [--sizes 0,10000,...] [--full-sizes 0,50000]
        [--rates 2000,20000] [--ingest-seconds S] [--skip-curve] [--skip-ingest]

Runs against an existing database that holds absorbed views (default: the one
bench/rollup_speed.py fills with ~10 M views), gunicorn on PostgreSQL and Redis. One client at
a time; every request sends ``Cache-Control: no-cache``.

1. **curve**: with no worker and no beat running, views (``viewed_at`` = now, the seeded skew
   of blogs and countries) are added without absorbing them until ``pending`` views are above
   the watermark, for each size of ``--sizes``; at each size the read matrix's cells
   (bench/matrix.py: every endpoint x 5 ranges x 5 filters) are timed, N requests each after
   one warm-up. At the sizes of ``--full-sizes`` every one of the 150 cells; at the others the
   cells with the filters none and 3 countries over all time, the year and the last 30 days (36
   cells). Prints per size the worst cell's p50 and p95 and the cells over the targets (p50 <=
   25 ms, p95 <= 60 ms at 50,000 pending), and the issue's four shapes across the sizes. The
   added views are deleted at the end (never absorbed, so the summaries are untouched).
2. **ingest**: a Celery worker and beat at their default settings (``ROLLUP_INTERVAL_SECONDS``,
   ``ABSORB_TRIGGER_PENDING``...), and a forked process ingesting R views/s (batches of R/20,
   ``viewed_at`` = now, through ``views_record`` like the ingest endpoint) for S seconds, for
   each rate of ``--rates``; meanwhile the client reads the seed's three shapes
   (analytics_http.py's first three) in turn. Prints p50/p95/max of each (targets: p95 <= 60 ms
   at 2,000 views/s; p95 <= 150 ms and max <= 500 ms at 20,000), the pending views sampled
   before each read, the achieved ingest rate and the worker's absorb runs. The views written
   stay (absorbed); a rerun's database is that much larger.
"""

import argparse
import json
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path

from analytics_http import Client, _busiest_year, _shapes, _token
from common import (
    absorb_runs,
    bench_env,
    django_setup,
    gunicorn_serving,
    without_rollup_settings,
    worker_and_beat,
)
from matrix import FILTER_NAMES, RANGE_NAMES, Cell, biggest_author, cells
from rollup_speed import _header, _ingest_loop, _weights

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/blogviews_bench_rollups"
REDIS_URL = "redis://127.0.0.1:6379/12"
PORT = 8767
SUBSET_RANGES = ("all time", "year", "30 days")
SUBSET_FILTERS = ("none", "3 countries")
TARGET_P50_MS, TARGET_P95_MS = 25.0, 60.0
WRITE_CHUNK = 50_000


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _timed(client: Client, path: str, body: bytes) -> float:
    """One uncached POST's milliseconds; an answer that is not a 200 (a 503 query_timeout,
    say) is printed and counts as its time."""
    started = time.perf_counter()
    try:
        return client.timed("POST", path, body, {"Cache-Control": "no-cache"})
    except SystemExit as failed:
        print(f"  FAILED after {(time.perf_counter() - started) * 1000:.0f} ms: {failed}")
        client.close()
        client.connection.connect()
        return (time.perf_counter() - started) * 1000


def _time_cell(client: Client, cell: Cell, requests: int) -> list[float]:
    body = json.dumps(cell.body).encode()
    _timed(client, cell.path, body)
    return [_timed(client, cell.path, body) for _ in range(requests)]


def _pending() -> int:
    from rollups.selectors import rollups_status

    return rollups_status().pending_views


def _add_pending(views: int, blogs: tuple, codes: tuple, rng_seed: int) -> None:
    """Write ``views`` more views of now, not absorbed (no trigger)."""
    import random

    from django.utils import timezone

    from ingest.services import views_record

    rng = random.Random(rng_seed)
    while views > 0:
        size = min(WRITE_CHUNK, views)
        views_record(
            views=zip(
                rng.choices(blogs[0], cum_weights=blogs[1], k=size),
                rng.choices(codes[0], cum_weights=codes[1], k=size),
                repeat(timezone.now(), size),
                strict=False,
            ),
            absorb_trigger=False,
        )
        views -= size


def curve(env: dict[str, str], args: argparse.Namespace, client: Client, all_cells: list[Cell]):
    from django.db import connection

    from rollups.absorb import rollups_absorb_pending
    from rollups.tables import RAW

    rollups_absorb_pending()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(max(id), 0) FROM {RAW}")
        base_id = int(cursor.fetchone()[0])
    blogs, codes = _weights()
    subset = [
        c for c in all_cells if c.range_name in SUBSET_RANGES and c.filter_name in SUBSET_FILTERS
    ]
    full_sizes = set(_sizes(args.full_sizes))
    results: dict[int, dict[str, tuple[float, float]]] = {}
    try:
        for size in _sizes(args.sizes):
            pending = _pending()
            if size < pending:
                raise SystemExit(f"--sizes must grow: {size:,} < {pending:,} pending")
            _add_pending(size - pending, blogs, codes, rng_seed=size)
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {RAW}")
            measured = all_cells if size in full_sizes else subset
            started = time.monotonic()
            figures = {}
            for cell in measured:
                times = _time_cell(client, cell, args.requests)
                figures[cell.label] = (statistics.median(times), _percentile(times, 0.95))
            results[size] = figures
            worst50 = max(figures.items(), key=lambda item: item[1][0])
            worst95 = max(figures.items(), key=lambda item: item[1][1])
            over = [
                label
                for label, (p50, p95) in figures.items()
                if p50 > TARGET_P50_MS or p95 > TARGET_P95_MS
            ]
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(
                f"curve: {_pending():,} pending, {len(measured)} cells x {args.requests} in "
                f"{time.monotonic() - started:.0f} s (load {load}): "
                f"worst p50 {worst50[1][0]:.1f} ms "
                f"({worst50[0]}), worst p95 {worst95[1][1]:.1f} ms ({worst95[0]}); "
                f"{len(over)} cells over p50 {TARGET_P50_MS:.0f} / p95 {TARGET_P95_MS:.0f} ms",
                flush=True,
            )
            for label in over:
                p50, p95 = figures[label]
                print(f"curve:   over: {label:<55} p50 {p50:6.1f} ms p95 {p95:6.1f} ms", flush=True)
            if args.verbose or size in full_sizes:
                for label, (p50, p95) in figures.items():
                    print(
                        f"curve:   {size:>7,} | {label:<55} p50 {p50:6.1f} p95 {p95:6.1f}",
                        flush=True,
                    )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {RAW} WHERE id > %s", [base_id])
            cursor.execute(f"VACUUM ANALYZE {RAW}")
    # The table: four shapes across the sizes (p50).
    shapes = [
        ("blog-views/country", "year", "none"),
        ("top/blog", "all time", "none"),
        ("top/user", "all time", "3 countries"),
        ("performance", "30 days", "none"),
    ]
    print("curve: p50 / p95 ms by pending views", flush=True)
    print("curve: | pending | " + " | ".join(f"{e} {{{r}, {f}}}" for e, r, f in shapes) + " |")
    for size, figures in results.items():
        row = []
        for endpoint, range_name, filter_name in shapes:
            p50, p95 = figures[f"{endpoint} | {range_name} | {filter_name}"]
            row.append(f"{p50:.1f} / {p95:.1f}")
        print(f"curve: | {size:,} | " + " | ".join(row) + " |", flush=True)
    for size, figures in results.items():
        p50s = [p50 for p50, _ in figures.values()]
        p95s = [p95 for _, p95 in figures.values()]
        print(
            f"curve: {size:>7,} pending, {len(figures)} cells: median cell p50 "
            f"{statistics.median(p50s):.1f} ms, worst p50 {max(p50s):.1f} ms, worst p95 "
            f"{max(p95s):.1f} ms",
            flush=True,
        )


def sustained(env: dict[str, str], args: argparse.Namespace, client: Client, year: int) -> None:
    from django.db import connections

    from rollups.absorb import rollups_absorb_pending

    blogs, codes = _weights()
    shapes = _shapes(year)[:3]
    for rate in _sizes(args.rates):
        rollups_absorb_pending()
        connections.close_all()
        celery_env = without_rollup_settings(bench_env(args.database_url, redis_url=args.redis_url))
        if args.trigger_pending is not None:
            # The ingest process is forked from this one: its settings are this process's.
            from django.conf import settings

            settings.ABSORB_TRIGGER_PENDING = args.trigger_pending
        with worker_and_beat(celery_env, args.redis_url, "tail") as logs:
            context = multiprocessing.get_context("fork")
            receiver, sender = context.Pipe(duplex=False)
            connections.close_all()
            batch = max(1, rate // 20)
            ingest = context.Process(
                target=_ingest_loop, args=(rate, batch, args.ingest_seconds, blogs, codes, sender)
            )
            ingest.start()
            sender.close()
            time.sleep(min(5.0, args.ingest_seconds / 4))
            times: dict[str, list[float]] = {path: [] for path, _ in shapes}
            pending: list[int] = []
            turn = 0
            while ingest.is_alive():
                path, filters = shapes[turn % len(shapes)]
                turn += 1
                pending.append(_pending())
                connections.close_all()
                body = json.dumps(filters).encode()
                times[path].append(_timed(client, f"/api/analytics/{path}/", body))
            written, elapsed, latencies = receiver.recv()
            ingest.join()
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        print(
            f"ingest {rate:,} views/s: achieved {written / elapsed:,.0f} views/s "
            f"for {elapsed:.0f} s "
            f"(batches of {batch:,}, per batch p95 {_percentile(latencies, 0.95) * 1000:.0f} ms); "
            f"pending before each read: p50 {_percentile(pending, 0.5):,}, max {max(pending):,}; "
            f"load {load}",
            flush=True,
        )
        for path, filters in shapes:
            found = times[path]
            print(
                f"ingest {rate:,} views/s: {path:<19} {json.dumps(filters):<62} "
                f"{len(found)} reads: "
                f"p50 {statistics.median(found):6.1f} ms p95 {_percentile(found, 0.95):6.1f} ms "
                f"max {max(found):6.1f} ms",
                flush=True,
            )
        print(f"ingest {rate:,} views/s: {absorb_runs(logs)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--requests", type=int, default=10, help="per cell and size")
    parser.add_argument("--sizes", default="0,10000,50000,200000,500000")
    parser.add_argument("--full-sizes", default="0,50000", help="sizes that time all 150 cells")
    parser.add_argument("--rates", default="2000,20000", help="views/s")
    parser.add_argument("--ingest-seconds", type=float, default=60)
    parser.add_argument(
        "--trigger-pending",
        type=int,
        default=None,
        help="ABSORB_TRIGGER_PENDING of the ingest process (default: the setting's; 0: off)",
    )
    parser.add_argument("--skip-curve", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="every cell at every size")
    args, _ = parser.parse_known_args()

    env = bench_env(args.database_url, redis_url=args.redis_url)
    env.update({"WEB_CONCURRENCY": "2", "ANALYTICS_THROTTLE_USER": "1000000/min"})
    django_setup(env)
    _header()
    token = _token()
    year = _busiest_year()
    all_cells = cells(year=year, today=datetime.now(UTC).date(), author=biggest_author())
    assert len(all_cells) == len(RANGE_NAMES) * len(FILTER_NAMES) * 6
    with gunicorn_serving(env, args.port):
        client = Client(args.port, token)
        print(f"tail at {args.database_url.rsplit('/', 1)[1]}, year {year}:", flush=True)
        if not args.skip_curve:
            curve(env, args, client, all_cells)
        if not args.skip_ingest:
            sustained(env, args, client, year)
        client.close()
    _header()


if __name__ == "__main__":
    main()
