"""Rollups on PostgreSQL: absorb speed, full rebuild time, lag under ingest load, table sizes.

    python bench/rollup_speed.py [--reuse] [--views 10000000] [--new-views 1000000]
                            [--lag-seconds 90] [--lag-rate 20000] [--skip-lag] [--skip-small]

On a scratch database (default ``blogviews_bench_rollups``, created if missing):

1. setup: ``seed_data --reset`` of ``--views`` views (it ends by absorbing them all; that absorb
   is reported on its own, from the state row). ``--reuse`` keeps a database that already holds
   the seeded views: what an earlier run added after them is deleted and the summaries rebuilt.
2. absorb: ``--new-views`` new views (viewed in the last 10 minutes) are written through
   ``views_record`` (not timed), then the summaries' absorb (``rollups_absorb_pending(recent=
   False)``, the goal) and the per-minute rows' own run (``rollups_absorb_recent()``) are timed
   one after the other, then both at once on as many new views again (as the worker's two
   processes run them); then the first two for as many late views spread over the last 365
   days (the worst case for the summaries: every day's rows are touched).
3. rebuild: one ``rollups_rebuild()`` of every day is timed.
4. lag: a real Celery worker and beat (Redis broker) absorb every ``--interval`` seconds while
   another process ingests ``--lag-rate`` views/s (batches of 1,000, ``viewed_at`` = now); every
   second the benchmark calls ``rollups_status()`` and measures the true lag from the raw table:
   the age of the oldest view above the watermark.
5. sizes: rows and ``pg_total_relation_size`` of the raw table and each summary, here and on the
   1 M-view database of ``seed.py`` (``--small-database-url``; ``run_rollups`` is run there).

Steps 2 and 3 also print where the time went, statement by statement.
"""

import argparse
import multiprocessing
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import repeat
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_BENCH_VIEWS,
    DEFAULT_DATABASE_URL,
    ROLLUPS_DATABASE_URL,
    ROOT,
    bench_env,
    bench_views,
    database_ensure,
    django_setup,
    manage,
    seed,
    server_settings,
    worker_absorbs,
    worker_and_beat,
)

REDIS_URL = "redis://127.0.0.1:6379/12"
AUTHORS = 200
BLOGS = 2000
WRITE_CHUNK = 100_000

# Weighted choices: (values, cumulative weights).
Weighted = tuple[list[Any], list[float]]


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _size(num_bytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024  # type: ignore[assignment]
    raise AssertionError


# --- Statement timings -------------------------------------------------------------------------


class StatementTimer:
    """A Django execute wrapper that adds up the time of each statement (by its SQL shape)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any
    ) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            shape = re.sub(r"\s+", " ", sql).strip()
            self.seconds[shape] += time.perf_counter() - started
            self.calls[shape] += 1

    def report(self, *, top: int = 8, width: int = 150) -> None:
        ranked = sorted(self.seconds.items(), key=lambda item: -item[1])
        for shape, seconds in ranked[:top]:
            calls = self.calls[shape]
            text = shape if len(shape) <= width else shape[: width - 3] + "..."
            print(f"    {seconds:7.2f} s  {calls:3d}x  {text}")
        rest = sum(seconds for _, seconds in ranked[top:])
        if rest:
            print(f"    {rest:7.2f} s        ({len(ranked) - top} other statements)")


@contextmanager
def statements_timed() -> Iterator[StatementTimer]:
    from django.db import connection

    timer = StatementTimer()
    with connection.execute_wrapper(timer):
        yield timer


# --- Database helpers --------------------------------------------------------------------------


def _scalar(sql: str, params: Sequence[Any] = ()) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))
        row = cursor.fetchone()
    return row[0] if row else None


def _execute(sql: str, params: Sequence[Any] = ()) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))


def table_sizes(database_url: str) -> list[tuple[str, int, int]]:
    """(table, rows, pg_total_relation_size) of the raw table and every summary (a partitioned
    table's size is its partitions', indexes included)."""
    import psycopg2

    from rollups.tables import RAW, SUMMARY_TABLES

    rows = []
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            for table in (RAW, *SUMMARY_TABLES):
                cursor.execute(
                    # pg_partition_tree has no rows for a table outside a partition tree.
                    f"SELECT count(*), coalesce((SELECT sum(pg_total_relation_size(relid)) "
                    f"FROM pg_partition_tree('{table}')), pg_total_relation_size('{table}')) "
                    f"FROM {table}"
                )
                count, size = cursor.fetchone()  # type: ignore[misc]
                rows.append((table, int(count), int(size)))
    finally:
        connection.close()
    return rows


def sizes_print(title: str, sizes: list[tuple[str, int, int]]) -> None:
    raw_size = sizes[0][2]
    print(f"{title}:")
    print(f"    {'table':<34} {'rows':>14} {'on disk':>10} {'bytes/row':>9} {'vs raw':>7}")
    for table, count, size in sizes:
        per_row = f"{size / count:,.0f}" if count else "-"
        print(
            f"    {table:<34} {count:>14,} {_size(size):>10} {per_row:>9} {size / raw_size:>6.1%}"
        )
    summaries = sum(size for _, _, size in sizes[1:])
    print(
        f"    {'all summaries':<34} {'':>14} {_size(summaries):>10} {'':>9} "
        f"{summaries / raw_size:>6.1%}"
    )


def _vacuum_analyze() -> None:
    """VACUUM the raw table and compact the summaries, so that every run starts alike.

    ``VACUUM FULL`` rewrites each summary without the dead rows that earlier absorbs and rebuilds
    left, so reruns with ``--reuse`` do not measure an ever more bloated table; and no autovacuum
    is due during the timed steps.
    """
    from rollups.tables import RAW, SUMMARY_TABLES

    _execute(f"VACUUM ANALYZE {RAW}")
    for table in SUMMARY_TABLES:
        _execute(f"VACUUM FULL ANALYZE {table}")


def _weights() -> tuple[Weighted, Weighted]:
    """Blogs and countries weighted by the views the summaries hold (the seeded skew)."""
    from django.db import connection

    from core.models import Blog, Country
    from rollups.tables import BLOG_LEVEL, COUNTRY_LEVEL

    picks: list[Weighted] = []
    for table, key, fallback in (
        (BLOG_LEVEL.monthly, "blog_id", Blog.objects.values_list("pk", flat=True)),
        (COUNTRY_LEVEL.daily, "country_id", Country.objects.values_list("code", flat=True)),
    ):
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {key}, sum(views) FROM {table} GROUP BY {key} ORDER BY {key}")
            rows = cursor.fetchall()
        if not rows:
            rows = [(value, 1) for value in fallback]
        cumulative, total = [], 0.0
        for _, views in rows:
            total += float(views)
            cumulative.append(total)
        picks.append(([value for value, _ in rows], cumulative))
    return picks[0], picks[1]


# --- 1. Setup ----------------------------------------------------------------------------------


def setup(env: dict[str, str], args: argparse.Namespace) -> None:
    from core.models import Blog
    from rollups.absorb import rollups_absorb_pending
    from rollups.rebuild import rollups_rebuild
    from rollups.selectors import rollups_status
    from rollups.tables import DAY_LEVEL, RAW

    raw_count = int(_scalar(f"SELECT count(*) FROM {RAW}"))
    if args.reuse and raw_count >= args.views and Blog.objects.count() == BLOGS:
        seeded_top = int(
            _scalar(f"SELECT id FROM {RAW} ORDER BY id OFFSET %s LIMIT 1", [args.views - 1])
        )
        extra = raw_count - args.views
        print(
            f"setup: reusing the {args.views:,} seeded views (ids through {seeded_top:,}); "
            f"deleting the {extra:,} views a previous run added",
            flush=True,
        )
        if extra:
            _execute(f"DELETE FROM {RAW} WHERE id > %s", [seeded_top])
            _execute(f"VACUUM ANALYZE {RAW}")
            # The summaries still count the deleted views: recompute them (timed as a bonus).
            started = time.perf_counter()
            result = rollups_rebuild()
            elapsed = time.perf_counter() - started
            print(
                f"setup: rebuild after the cleanup: {result.views:,} views in {elapsed:.1f} s",
                flush=True,
            )
        elif rollups_status().pending_views:
            rollups_absorb_pending()
        counted = int(_scalar(f"SELECT coalesce(sum(views), 0) FROM {DAY_LEVEL.daily}"))
        if counted != args.views:
            # E.g. a seed stopped while it built the summaries: recount them from raw.
            print(
                f"setup: the summaries count {counted:,} views, not {args.views:,}: "
                "rebuilding them from raw",
                flush=True,
            )
            started = time.perf_counter()
            result = rollups_rebuild()
            print(
                f"setup: rebuild: {result.views:,} views in {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        _vacuum_analyze()
        return

    started = time.monotonic()
    printed = seed(env, views=args.views, authors=AUTHORS, blogs=BLOGS, bulk=args.seed_bulk)
    elapsed = time.monotonic() - started
    for line in printed.splitlines():
        print(f"    seed_data: {line}")
    match = re.search(r"views in ([\d.]+) s", printed)
    seeding = float(match.group(1)) if match else float("nan")
    if args.seed_bulk:
        rebuilt = re.search(r"rebuilt from raw \(([\d,]+) views in ([\d.]+) s", printed)
        print(
            f"setup: seed_data --bulk {args.views:,} views in {elapsed:.1f} s wall "
            f"(writing, indexes included, {seeding:.1f} s = {args.views / seeding:,.0f} views/s; "
            f"summaries rebuilt from empty in {rebuilt.group(2) if rebuilt else '?'} s)",
            flush=True,
        )
        _vacuum_analyze()
        return
    from rollups.models import AbsorbState

    state = AbsorbState.objects.get(name="views")
    absorb = (state.last_run_duration_ms or 0) / 1000
    print(
        f"setup: seed_data {args.views:,} views in {elapsed:.1f} s wall "
        f"(writing {seeding:.1f} s = {args.views / seeding:,.0f} views/s)",
        flush=True,
    )
    print(
        f"setup: absorb of the {state.last_run_views:,} seeded views (inside seed_data): "
        f"{absorb:.1f} s ({state.last_run_views / absorb:,.0f} views/s)",
        flush=True,
    )
    _vacuum_analyze()


# --- 2. Absorb ---------------------------------------------------------------------------------


# (what the views are, the span of their viewed_at before now, whether the goal applies)
ABSORB_CASES = [
    ("new views (viewed in the last 10 minutes, as ingest writes them)", 600, True),
    ("late views (spread over the last 365 days)", 365 * 86_400, False),
]


def _views_write(views: int, span: int, rng: random.Random) -> float:
    """Write ``views`` views viewed over the last ``span`` seconds through ``views_record`` (as
    ingest does, no trigger); return the seconds it took."""
    from ingest.services import views_record

    (blogs, blog_cum), (codes, code_cum) = _weights()
    now = datetime.now(UTC)
    written, started = 0, time.perf_counter()
    while written < views:
        size = min(WRITE_CHUNK, views - written)
        stamps = [now - timedelta(seconds=rng.random() * span) for _ in range(size)]
        written += views_record(
            views=zip(
                rng.choices(blogs, cum_weights=blog_cum, k=size),
                rng.choices(codes, cum_weights=code_cum, k=size),
                stamps,
                strict=True,
            ),
            absorb_trigger=False,
        )
    return time.perf_counter() - started


def _both_absorbs() -> tuple[float, float, float]:
    """The summaries' absorb and the per-minute rows' at once, each on its own connection (as
    the worker's two processes run them): (summaries s, per-minute s, wall s)."""
    from django.db import connection

    from rollups.absorb import rollups_absorb_pending, rollups_absorb_recent

    seconds: dict[str, float] = {}

    def run(label: str, work: Callable[[], Any]) -> None:
        try:
            started = time.perf_counter()
            work()
            seconds[label] = time.perf_counter() - started
        finally:
            connection.close()

    started = time.perf_counter()
    threads = [
        threading.Thread(
            target=run, args=("summaries", lambda: rollups_absorb_pending(recent=False))
        ),
        threading.Thread(target=run, args=("recent", rollups_absorb_recent)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seconds["summaries"], seconds["recent"], time.perf_counter() - started


def absorb(args: argparse.Namespace) -> None:
    """Time one absorb of --new-views views for each case of ABSORB_CASES: the summaries' run
    (the goal), then the per-minute rows' run of the same views; for new views, then both at
    once on as many new views again (as the worker's two processes run them)."""
    from rollups.absorb import rollups_absorb_pending, rollups_absorb_recent
    from rollups.selectors import rollups_status
    from rollups.tables import RAW

    if rollups_status().pending_views:
        rollups_absorb_pending()
    rng = random.Random(2)
    for label, span, goal in ABSORB_CASES:
        watermark = rollups_status().absorbed_through_id
        wrote = _views_write(args.new_views, span, rng)
        print(f"absorb: wrote {args.new_views:,} {label} in {wrote:.1f} s (not timed)", flush=True)
        _execute("CHECKPOINT")  # the writes' dirty pages are not the absorb's to flush
        with statements_timed() as timer:
            started = time.perf_counter()
            result = rollups_absorb_pending(recent=False)
            elapsed = time.perf_counter() - started
        verdict = (
            ("meets" if elapsed <= 3 else "MISSES") + " the goal: <= 3 s, >= 300,000 views/s"
            if goal
            else "no goal; late data is exact, not fast"
        )
        print(
            f"absorb: {result.views:,} {label.split(' (')[0]} into the summaries in "
            f"{elapsed:.2f} s = {result.views / elapsed:,.0f} views/s ({verdict})",
            flush=True,
        )
        timer.report()
        with statements_timed() as timer:
            started = time.perf_counter()
            recent = rollups_absorb_recent()
            elapsed = time.perf_counter() - started
        print(
            f"absorb: the same views into the per-minute rows (their own run): {recent.views:,} "
            f"of the last hour in {elapsed:.2f} s",
            flush=True,
        )
        timer.report(top=4)
        groups = _scalar(
            "SELECT count(*) FROM (SELECT DISTINCT (viewed_at AT TIME ZONE 'UTC')::date, "
            f"blog_id, country_id FROM {RAW} WHERE id > %s AND id <= %s) AS g",
            [watermark, result.absorbed_through_id],
        )
        print(f"absorb: those views fall into {groups:,} (day, blog, country) groups", flush=True)
        if not goal:
            continue
        _views_write(args.new_views, span, rng)
        _execute("CHECKPOINT")
        summaries, per_minute, wall = _both_absorbs()
        print(
            f"absorb: {args.new_views:,} more new views, both runs at once on two connections: "
            f"summaries {summaries:.2f} s, per-minute rows {per_minute:.2f} s, wall {wall:.2f} s",
            flush=True,
        )


def day_end() -> None:
    """Time the first run of a day: it adds the day that ended to the monthly and yearly
    (blog, country) rows (the absorbs above leave the open day out of them) and moves the
    trailing rows' windows a day on.

    The state is put back to how the last run of yesterday left it (yesterday open, its views
    not in the monthly and yearly rows, the trailing windows a day back), then one run with
    nothing to absorb is timed.
    """
    from django.db import connection

    from rollups.absorb import rollups_absorb_pending, trailing_fold
    from rollups.models import AbsorbState
    from rollups.tables import BLOG_COUNTRY_LEVEL, LEVELS, STATE_NAME

    rollups_absorb_pending()
    today = AbsorbState.objects.get(name=STATE_NAME).monthly_open_from
    assert today is not None
    yesterday = today - timedelta(days=1)
    for table, column, unit in (
        (BLOG_COUNTRY_LEVEL.monthly, "month", "month"),
        (BLOG_COUNTRY_LEVEL.yearly, "year", "year"),
    ):
        _execute(
            f"UPDATE {table} m SET views = m.views - d.views "
            f"FROM {BLOG_COUNTRY_LEVEL.daily} d "
            f"WHERE d.day = %s AND m.{column} = date_trunc('{unit}', d.day) "
            "AND m.blog_id = d.blog_id AND m.country_id = d.country_id",
            [yesterday],
        )
        _execute(f"DELETE FROM {table} WHERE views = 0")
        _execute(f"VACUUM ANALYZE {table}")
    with connection.cursor() as cursor:
        for level in LEVELS:
            if level.trailing is not None:
                trailing_fold(cursor, level, today, yesterday)
                _execute(f"VACUUM ANALYZE {level.trailing}")
    AbsorbState.objects.filter(name=STATE_NAME).update(monthly_open_from=yesterday)
    rows = _scalar(f"SELECT count(*) FROM {BLOG_COUNTRY_LEVEL.daily} WHERE day = %s", [yesterday])
    with statements_timed() as timer:
        started = time.perf_counter()
        rollups_absorb_pending()
        elapsed = time.perf_counter() - started
    print(
        f"day end: the first run of a day, adding {yesterday} ({rows:,} daily blog x country "
        f"rows) to the monthly and yearly ones, took {elapsed:.2f} s",
        flush=True,
    )
    timer.report()


# --- 3. Rebuild --------------------------------------------------------------------------------


# Process memory fields sampled (kB): VmRSS counts every resident page the process maps,
# shared_buffers pages it touched included (RssShmem); RssAnon is its private heap (sorts,
# hashes, Python objects); Pss splits shared pages among the processes that map them.
MEMORY_FIELDS = ("VmRSS", "RssAnon", "RssShmem", "Pss")


def _memory(pid: int) -> dict[str, int] | None:
    """The MEMORY_FIELDS of a process, in kB (None once it has gone)."""
    found: dict[str, int] = {}
    try:
        for path in (f"/proc/{pid}/status", f"/proc/{pid}/smaps_rollup"):
            for line in Path(path).read_text().splitlines():
                key, _, value = line.partition(":")
                if key in MEMORY_FIELDS and key not in found:
                    found[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return found


class MemorySampler:
    """Every ``interval`` seconds, the memory of this process and of the PostgreSQL backend
    serving Django's connection (and its parallel workers, from ``pg_stat_activity``), on a
    thread with its own connection; the peak of each field per role."""

    def __init__(self, database_url: str, interval: float) -> None:
        from django.db import connection

        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            self.backend = int(cursor.fetchone()[0])
        self.database_url = database_url
        self.interval = interval
        self.peaks: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.samples = 0
        self.temp_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _temp_bytes(self, cursor: Any) -> int:
        cursor.execute("SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])

    def _run(self) -> None:
        import psycopg2

        watcher = psycopg2.connect(self.database_url)
        watcher.autocommit = True
        try:
            with watcher.cursor() as cursor:
                temp_before = self._temp_bytes(cursor)
                while not self._stop.is_set():
                    cursor.execute(
                        "SELECT pid FROM pg_stat_activity WHERE leader_pid = %s AND pid <> %s",
                        [self.backend, self.backend],
                    )
                    roles = [("python", os.getpid()), ("backend", self.backend)]
                    roles += [("parallel worker", int(row[0])) for row in cursor.fetchall()]
                    for role, pid in roles:
                        memory = _memory(pid)
                        for field, value in (memory or {}).items():
                            peak = self.peaks[role]
                            peak[field] = max(peak[field], value)
                    self.samples += 1
                    self._stop.wait(self.interval)
                # Temporary files are counted when they are closed: wait for the statistics.
                time.sleep(1)
                self.temp_bytes = self._temp_bytes(cursor) - temp_before
        finally:
            watcher.close()

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def report(self, label: str) -> None:
        print(
            f"{label}: peak memory over {self.samples} samples every {self.interval} s "
            "(VmRSS / RssAnon private / RssShmem shared_buffers touched / Pss):",
            flush=True,
        )
        worst = 0
        for role, peak in self.peaks.items():
            worst = max(worst, peak["VmRSS"])
            print(
                "    "
                + f"{role:<16}"
                + " / ".join(f"{field} {peak[field] / 1024:,.0f} MB" for field in MEMORY_FIELDS),
                flush=True,
            )
        verdict = "meets" if worst < 1024 * 1024 else "MISSES"
        print(
            f"    largest VmRSS {worst / 1024:,.0f} MB ({verdict} the goal: < 1 GB in any "
            f"process); temporary files written meanwhile: {_size(self.temp_bytes)}",
            flush=True,
        )


def _rebuild_goal(views: int) -> float:
    """Seconds: 60 at 10 M views (and below), 10 minutes at 100 M, linear between."""
    return max(60.0, 60.0 + (views - 10_000_000) * (540.0 / 90_000_000))


def rebuild(args: argparse.Namespace) -> None:
    from rollups.rebuild import rollups_rebuild

    goal = _rebuild_goal(args.views)
    with (
        MemorySampler(args.database_url, args.rss_interval) as memory,
        statements_timed() as timer,
    ):
        started = time.perf_counter()
        result = rollups_rebuild()
        elapsed = time.perf_counter() - started
    verdict = "meets" if elapsed <= goal else "MISSES"
    print(
        f"rebuild: all days ({result.start_date} to {result.end_date}), {result.views:,} views "
        f"in {elapsed:.1f} s = {result.views / elapsed:,.0f} views/s "
        f"({verdict} the goal: <= {goal:.0f} s); load {_load()}",
        flush=True,
    )
    timer.report()
    memory.report("rebuild")


def rebuild_month(args: argparse.Namespace) -> None:
    """Time a rebuild of the last whole month (the one before this one)."""
    from django.utils import timezone

    from rollups.rebuild import rollups_rebuild

    first_of_this = timezone.now().date().replace(day=1)
    last = first_of_this - timedelta(days=1)
    first = last.replace(day=1)
    with (
        MemorySampler(args.database_url, args.rss_interval) as memory,
        statements_timed() as timer,
    ):
        started = time.perf_counter()
        result = rollups_rebuild(start_date=first, end_date=last)
        elapsed = time.perf_counter() - started
    verdict = "meets" if elapsed <= 30 else "MISSES"
    print(
        f"rebuild: one month ({first} to {last}), {result.views:,} views in {elapsed:.1f} s "
        f"({verdict} the goal: <= 30 s); load {_load()}",
        flush=True,
    )
    timer.report()
    memory.report("rebuild one month")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- 4. Lag under load -------------------------------------------------------------------------


def _ingest_loop(
    rate: float,
    batch: int,
    seconds: float,
    blogs: Weighted,
    codes: Weighted,
    results: Connection,
) -> None:
    """Write ``batch`` views every ``batch / rate`` seconds (``viewed_at`` = now) for ``seconds``.

    Runs in a forked process; a batch that falls behind is written at once, so the rate holds.
    """
    from django.utils import timezone

    from ingest.services import views_record

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    rng = random.Random(3)
    interval = batch / rate
    started = time.monotonic()
    deadline = started + seconds
    next_at = started
    written, latencies = 0, []
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        if next_at > now:
            time.sleep(next_at - now)
        begun = time.perf_counter()
        written += views_record(
            views=zip(
                rng.choices(blogs[0], cum_weights=blogs[1], k=batch),
                rng.choices(codes[0], cum_weights=codes[1], k=batch),
                repeat(timezone.now(), batch),
                strict=False,
            )
        )
        latencies.append(time.perf_counter() - begun)
        next_at += interval
    results.send((written, time.monotonic() - started, latencies))
    results.close()


def lag(env: dict[str, str], args: argparse.Namespace) -> None:
    from django.db import connections
    from django.utils import timezone

    from rollups.absorb import rollups_absorb_pending
    from rollups.selectors import rollups_status
    from rollups.tables import RAW

    blogs, codes = _weights()
    rollups_absorb_pending()
    connections.close_all()

    celery_env = bench_env(args.database_url, redis_url=args.redis_url)
    celery_env["ROLLUP_INTERVAL_SECONDS"] = str(args.interval)
    with worker_and_beat(celery_env, args.redis_url, "rollups") as logs:
        print(f"lag: worker and beat running; their logs in {logs}", flush=True)
        rollups_absorb_pending()

        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        connections.close_all()
        ingest = context.Process(
            target=_ingest_loop,
            args=(args.lag_rate, args.lag_batch, args.lag_seconds, blogs, codes, sender),
        )
        ingest.start()
        sender.close()

        true_lags: list[float] = []
        app_lags: list[float] = []
        pending: list[int] = []
        next_sample = time.monotonic()
        while ingest.is_alive():
            status = rollups_status()
            oldest = _scalar(
                f"SELECT viewed_at FROM {RAW} WHERE id > %s ORDER BY id LIMIT 1",
                [status.absorbed_through_id],
            )
            true_lags.append((timezone.now() - oldest).total_seconds() if oldest else 0.0)
            app_lags.append(status.lag_seconds)
            pending.append(status.pending_views)
            next_sample += 1.0
            time.sleep(max(0.0, next_sample - time.monotonic()))
        written, elapsed, latencies = receiver.recv()
        ingest.join()

    print(
        f"lag: ingest {written / elapsed:,.0f} views/s achieved (target {args.lag_rate:,.0f}) "
        f"for {elapsed:.0f} s, {written:,} views in batches of {args.lag_batch:,}; per batch "
        f"p50 {_percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p95 {_percentile(latencies, 0.95) * 1000:.1f} ms, max {max(latencies) * 1000:.0f} ms",
        flush=True,
    )
    worst = max(true_lags)
    verdict = "meets" if worst <= 30 else "MISSES"
    print(
        f"lag: oldest unabsorbed view (from raw, {len(true_lags)} samples at 1 s): "
        f"max {worst:.1f} s, p95 {_percentile(true_lags, 0.95):.1f} s, "
        f"p50 {_percentile(true_lags, 0.5):.1f} s ({verdict} the goal: <= 30 s; interval "
        f"{args.interval} s)",
        flush=True,
    )
    print(
        f"lag: rollups_status().lag_seconds: max {max(app_lags):.1f} s, "
        f"p95 {_percentile(app_lags, 0.95):.1f} s; pending views max {max(pending):,}",
        flush=True,
    )
    absorbed = [(seconds, views) for seconds, views in worker_absorbs(logs) if views]
    if absorbed:
        print(
            f"lag: {len(absorbed)} absorb runs by the worker with views: "
            + ", ".join(f"{views:,} views in {seconds:.2f} s" for seconds, views in absorbed),
            flush=True,
        )
    rollups_absorb_pending()


# --- Main --------------------------------------------------------------------------------------


def small_sizes(args: argparse.Namespace) -> None:
    """Sizes on seed.py's 1 M-view database, after absorbing everything there."""
    env = bench_env(args.small_database_url)
    database_ensure(args.small_database_url)
    manage(env, "migrate", "--noinput", "-v0")
    print(f"small database: run_rollups: {manage(env, 'run_rollups').strip()}", flush=True)
    sizes_print(
        f"sizes at {table_sizes(args.small_database_url)[0][1]:,} views "
        f"({args.small_database_url.rsplit('/', 1)[1]})",
        table_sizes(args.small_database_url),
    )


def _header() -> None:
    """The code measured and how busy the machine is (other work skews every figure)."""
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty=+uncommitted changes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"code: {described or 'unknown'}; load average {load}", flush=True)
    print(f"server: {server_settings()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=ROLLUPS_DATABASE_URL)
    parser.add_argument("--small-database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--views", type=int, default=bench_views(), help="default BENCH_VIEWS")
    parser.add_argument(
        "--seed-bulk",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="seed with seed_data --bulk (default: above 10 M views)",
    )
    parser.add_argument(
        "--rss-interval", type=float, default=0.5, help="seconds between memory samples"
    )
    parser.add_argument("--new-views", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="keep an already seeded database")
    parser.add_argument("--lag-seconds", type=float, default=90)
    parser.add_argument("--lag-rate", type=float, default=20_000, help="views/s")
    parser.add_argument("--lag-batch", type=int, default=1000)
    parser.add_argument("--interval", type=int, default=30, help="ROLLUP_INTERVAL_SECONDS")
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--skip-small", action="store_true", help="no sizes at 1 M views")
    parser.add_argument(
        "--skip-rebuild", action="store_true", help="no full or one-month rebuild (absorb A/B)"
    )
    args = parser.parse_args()

    if args.seed_bulk is None:
        args.seed_bulk = args.views > DEFAULT_BENCH_VIEWS
    env = bench_env(args.database_url)
    database_ensure(args.database_url)
    manage(env, "migrate", "--noinput", "-v0")
    django_setup(env)
    _header()

    setup(env, args)
    sizes = table_sizes(args.database_url)
    sizes_print(f"sizes at {sizes[0][1]:,} views, compacted (after setup)", sizes)
    absorb(args)
    day_end()
    if not args.skip_rebuild:
        rebuild(args)
        rebuild_month(args)
    if not args.skip_lag:
        lag(env, args)
    sizes = table_sizes(args.database_url)
    sizes_print(f"sizes at {sizes[0][1]:,} views ({args.database_url.rsplit('/', 1)[1]})", sizes)
    if not args.skip_small:
        small_sizes(args)
    _header()


if __name__ == "__main__":
    main()
