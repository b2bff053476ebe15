"""The read matrix over HTTP: every analytics endpoint x 5 ranges x 5 filters (bench/matrix.py),
uncached and cached, against the same answer computed straight from the raw views.

    python bench/matrix_http.py [--database-url URL] [--views N] [--requests 30]
        [--cached-requests 60] [--raw-runs 3] [--only REGEX] [--port P] [--redis-url URL]
        [--chart PNG] [--json PATH]

gunicorn (gunicorn.conf.py, 2 workers) on PostgreSQL and Redis, one client at a time, JWT. For
each cell: ``--requests`` uncached POSTs (``Cache-Control: no-cache``) over a kept connection
(the server decides whether it stays open), then ``--cached-requests`` cached POSTs over a kept
connection, then as many each on a new connection. Then ``--raw-runs`` runs of the cell's
raw-scan answer (``matrix.raw_scan``: the seed's ``values()`` + ``annotate()`` over the raw
table, in this process) and a check that it gives the API's answer. Prints the matrix as a table
(and a compact grid for the README), the cells that miss a target, and writes a heat map of p50
per cell (``--chart``) and every figure as JSON (``--json``).

The database (default ``blogviews_bench_matrix``) is seeded the first time, if it holds no views:
``seed_data --views N --seed 7 --authors 200 --blogs 2000`` (default 10 M: a few minutes). Any
other seeded database works (``--database-url``); the ranges are those of issue #11 around its
busiest year and today.

Targets for every cell: uncached p50 <= 25 ms and p95 <= 60 ms, at least 50x faster than the
raw scan (p50 against p50); cached p50 <= 1.5 ms over a kept connection, <= 3 ms with a new
connection per request.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import ROOT, bench_env, database_ensure, django_setup, gunicorn_serving, manage
from common import server_settings as settings_shown
from matrix import (
    CACHED,
    CACHED_NEW_CONNECTION,
    FILTER_NAMES,
    RANGE_NAMES,
    UNCACHED,
    Cell,
    CellTimes,
    Reader,
    biggest_author,
    cells,
    cells_time,
    raw_scan,
    raw_scan_differences,
)

PORT = 8767
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/blogviews_bench_matrix"
REDIS_URL = "redis://127.0.0.1:6379/11"
DEFAULT_CHART = ROOT / "bench" / "results" / "read-matrix.png"

UNCACHED_P50_MS = 25.0
UNCACHED_P95_MS = 60.0
SPEEDUP = 50.0
CACHED_P50_MS = 1.5
CACHED_NEW_CONNECTION_P50_MS = 3.0
# Issue #11's data: 200 authors and 2,000 blogs (as rollup_speed.py's), views over the last year.
SEED_ARGS = ("seed_data", "--seed", "7", "--authors", "200", "--blogs", "2000")


def _token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import RefreshToken

    user, _ = get_user_model().objects.get_or_create(username="bench-reader")
    return str(RefreshToken.for_user(user).access_token)


def _busiest_year() -> int:
    """The year with the most absorbed views (from the daily totals: cheap at any size)."""
    from django.db.models import Sum
    from django.db.models.functions import ExtractYear

    from rollups.models import DailyViews

    row = (
        DailyViews.objects.annotate(year=ExtractYear("day"))
        .values("year")
        .annotate(n=Sum("views"))
        .order_by("-n")
        .first()
    )
    if row is None:
        raise SystemExit("no absorbed views: seed and absorb the database first")
    return int(row["year"])


def _views() -> int:
    from django.db.models import Sum

    from rollups.models import DailyViews

    return int(DailyViews.objects.aggregate(n=Sum("views"))["n"] or 0)


class Result:
    """One cell's figures: its HTTP times, its raw-scan times and whether the answers agree."""

    def __init__(self, timed: CellTimes, raw: list[float], difference: str) -> None:
        self.timed = timed
        self.raw = raw
        self.difference = difference

    @property
    def cell(self) -> Cell:
        return self.timed.cell

    @property
    def speedup(self) -> float | None:
        if not self.raw:
            return None
        return statistics.median(self.raw) / self.timed.p50(UNCACHED)

    def misses(self) -> list[str]:
        """The targets this cell misses, named."""
        missed = []
        if self.timed.p50(UNCACHED) > UNCACHED_P50_MS:
            missed.append("uncached p50")
        if self.timed.p95(UNCACHED) > UNCACHED_P95_MS:
            missed.append("uncached p95")
        if self.speedup is not None and self.speedup < SPEEDUP:
            missed.append(f"speedup < {SPEEDUP:.0f}x")
        if self.timed.p50(CACHED) > CACHED_P50_MS:
            missed.append("cached p50")
        if self.timed.p50(CACHED_NEW_CONNECTION) > CACHED_NEW_CONNECTION_P50_MS:
            missed.append("cached p50 (new connection)")
        if self.difference:
            missed.append("answer differs from the raw scan")
        return missed

    def as_json(self) -> dict[str, Any]:
        timed = self.timed
        return {
            "endpoint": self.cell.endpoint,
            "range": self.cell.range_name,
            "filter": self.cell.filter_name,
            "body": self.cell.body,
            **{
                f"{mode} {figure}": round(value(mode), 3)
                for mode in timed.times
                for figure, value in (("p50", timed.p50), ("p95", timed.p95))
            },
            "raw ms": [round(ms, 1) for ms in self.raw],
            "speedup": None if self.speedup is None else round(self.speedup, 1),
            "difference": self.difference,
            "misses": self.misses(),
        }


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _raw_timed(cell: Cell, answer: dict[str, Any], runs: int) -> tuple[list[float], str]:
    """``runs`` timings (ms) of the cell's raw-scan answer, and how it differs from ``answer``."""
    from django.db import connection

    granularity = answer["meta"].get("granularity")
    times = []
    rows: list[tuple[Any, ...]] = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = raw_scan(cell, granularity=granularity)
        times.append((time.perf_counter() - started) * 1000)
    connection.close()
    return times, raw_scan_differences(cell, answer, rows) if runs else ""


def _table(results: list[Result]) -> str:
    lines = [
        "| endpoint | range | filter | uncached p50 / p95 | cached p50 / p95 | cached, new "
        "connection p50 / p95 | raw scan p50 | speedup | misses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        timed = result.timed
        figures = [
            f"{_ms(timed.p50(mode))} / {_ms(timed.p95(mode))}"
            for mode in (UNCACHED, CACHED, CACHED_NEW_CONNECTION)
        ]
        raw = _ms(statistics.median(result.raw)) if result.raw else ""
        speedup = "" if result.speedup is None else f"{result.speedup:,.0f}x"
        lines.append(
            f"| {result.cell.endpoint} | {result.cell.range_name} | {result.cell.filter_name} | "
            f"{' | '.join(figures)} | {raw} | {speedup} | {', '.join(result.misses())} |"
        )
    return "\n".join(lines)


def _grid(results: list[Result]) -> str:
    """Endpoint x range rows, a column per filter: uncached p50 / p95 ms and the speedup."""
    by_cell = {(r.cell.endpoint, r.cell.range_name, r.cell.filter_name): r for r in results}
    lines = [
        "| endpoint | range | " + " | ".join(FILTER_NAMES) + " |",
        "|---|---|" + "---|" * len(FILTER_NAMES),
    ]
    rows = sorted({(r.cell.endpoint, r.cell.range_name) for r in results}, key=_row_order(results))
    for endpoint, range_name in rows:
        entries = []
        for filter_name in FILTER_NAMES:
            found = by_cell.get((endpoint, range_name, filter_name))
            if found is None:
                entries.append("")
                continue
            entry = f"{_ms(found.timed.p50(UNCACHED))} / {_ms(found.timed.p95(UNCACHED))}"
            if found.speedup is not None:
                entry += f", {found.speedup:,.0f}x"
            if found.misses():
                entry = f"**{entry}**"
            entries.append(entry)
        lines.append(f"| {endpoint} | {range_name} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def _row_order(results: list[Result]) -> Any:
    endpoints = list(dict.fromkeys(r.cell.endpoint for r in results))
    return lambda row: (endpoints.index(row[0]), RANGE_NAMES.index(row[1]))


def _spread(results: list[Result], mode: str) -> str:
    p50s = sorted(result.timed.p50(mode) for result in results)
    return (
        f"p50 {p50s[0]:.2f}-{p50s[-1]:.2f} ms over the cells (median cell "
        f"{statistics.median(p50s):.2f} ms)"
    )


def _chart(results: list[Result], path: Path, title: str) -> None:
    """A heat map of p50 per cell: uncached beside cached (kept connection), each cell's figure
    written in it; rows endpoint x range, columns the filters. Cells that miss their target are
    marked with a red frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = sorted({(r.cell.endpoint, r.cell.range_name) for r in results}, key=_row_order(results))
    by_cell = {(r.cell.endpoint, r.cell.range_name, r.cell.filter_name): r for r in results}
    panels = (
        (UNCACHED, "uncached p50 (ms)", UNCACHED_P50_MS),
        (CACHED, "cached p50, kept connection (ms)", CACHED_P50_MS),
    )
    figure, axes = plt.subplots(
        1, len(panels), figsize=(15, 2.2 + 0.34 * len(rows)), constrained_layout=True
    )
    for axis, (mode, label, target) in zip(axes, panels, strict=True):
        grid = [
            [
                by_cell[(e, r, f)].timed.p50(mode) if (e, r, f) in by_cell else float("nan")
                for f in FILTER_NAMES
            ]
            for e, r in rows
        ]
        image = axis.imshow(grid, cmap="RdYlGn_r", vmin=0, vmax=target * 2, aspect="auto")
        figure.colorbar(image, ax=axis, shrink=0.6, label=f"{label}; target <= {target:g}")
        axis.set_xticks(range(len(FILTER_NAMES)), FILTER_NAMES, rotation=20, ha="right")
        axis.set_yticks(range(len(rows)), [f"{e} | {r}" for e, r in rows])
        axis.set_title(label)
        for y, row in enumerate(grid):
            for x, value in enumerate(row):
                if value != value:  # nan: not measured
                    continue
                axis.text(x, y, f"{value:.1f}", ha="center", va="center", fontsize=8)
                if value > target:
                    axis.add_patch(
                        Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", lw=2)
                    )
    figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _seed_if_empty(env: dict[str, str], views: int) -> None:
    """Migrate, and seed ``views`` views (``SEED_ARGS``) when the database holds none."""
    manage(env, "migrate", "-v", "0")
    if _views() == 0:
        print(f"seeding {views:,} views ({' '.join(SEED_ARGS)}; minutes) ...", flush=True)
        started = time.monotonic()
        print(manage(env, *SEED_ARGS, "--views", str(views)).strip())
        print(f"seeded in {time.monotonic() - started:.0f} s", flush=True)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--views", type=int, default=10_000_000, help="seeded if none (10 M)")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--requests", type=int, default=30, help="uncached, per cell")
    parser.add_argument("--cached-requests", type=int, default=60, help="per cell and mode")
    parser.add_argument("--raw-runs", type=int, default=3, help="raw scans per cell (0: none)")
    parser.add_argument("--only", default="", help="only cells whose label matches this regex")
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART)
    parser.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = parser.parse_args()
    if args.requests < 1 or args.cached_requests < 1:
        # Every column of the report (p50, p95, misses, heat map) needs a figure per mode.
        parser.error("--requests and --cached-requests must each be at least 1")

    database_ensure(args.database_url)
    env = bench_env(args.database_url, redis_url=args.redis_url)
    env.update({"WEB_CONCURRENCY": "2", "ANALYTICS_THROTTLE_USER": "1000000/min"})
    django_setup(env)
    _seed_if_empty(env, args.views)
    views, year, author = _views(), _busiest_year(), biggest_author()
    today = datetime.now(UTC).date()
    chosen = [
        cell
        for cell in cells(year=year, today=today, author=author)
        if re.search(args.only, cell.label)
    ]
    database = args.database_url.rsplit("/", 1)[1]
    print(
        f"read matrix at {database}: {views:,} views, year {year}, today {today}, biggest "
        f"author {author!r}, {len(chosen)} cells; {settings_shown()} (the server's own "
        f"settings); {_uptime()}",
        flush=True,
    )
    token = _token()
    started = time.monotonic()

    def progress(timed: CellTimes) -> None:
        print(
            f"  {timed.cell.label:<58} uncached {timed.p50(UNCACHED):6.1f} / "
            f"{timed.p95(UNCACHED):6.1f} ms | cached {timed.p50(CACHED):5.2f} ms | new "
            f"connection {timed.p50(CACHED_NEW_CONNECTION):5.2f} ms",
            flush=True,
        )

    with gunicorn_serving(env, args.port):
        reader = Reader(args.port, token)
        timed = cells_time(
            reader,
            chosen,
            requests=args.requests,
            cached_requests=args.cached_requests,
            progress=progress,
        )
        reader.close()
    http_seconds = time.monotonic() - started
    print(f"HTTP: {http_seconds:.0f} s; {_uptime()}", flush=True)

    results = []
    started = time.monotonic()
    for one in timed:
        raw, difference = _raw_timed(one.cell, one.answer, args.raw_runs)
        result = Result(one, raw, difference)
        if raw:
            print(
                f"  raw {one.cell.label:<58} {' '.join(_ms(ms) for ms in raw)} ms, "
                f"{result.speedup:,.0f}x{'; DIFFERS: ' + difference if difference else ''}",
                flush=True,
            )
        results.append(result)
    print(f"raw scans: {time.monotonic() - started:.0f} s; {_uptime()}", flush=True)

    print("\n" + _table(results))
    print("\nuncached p50 / p95 ms, speedup over the raw scan (bold: a target missed):\n")
    print(_grid(results))
    print(f"\ncached, kept connection: {_spread(results, CACHED)}")
    print(f"cached, new connection per request: {_spread(results, CACHED_NEW_CONNECTION)}")
    missed = [result for result in results if result.misses()]
    print(f"\n{len(missed)} of {len(results)} cells miss a target:")
    for result in missed:
        print(f"  {result.cell.label} {json.dumps(result.cell.body)}: {', '.join(result.misses())}")
    title = (
        f"Read matrix at {views / 1e6:,.1f} M views ({database}), p50 per cell; "
        f"{datetime.now(UTC):%Y-%m-%d}"
    )
    _chart(results, args.chart, title)
    print(f"heat map: {os.path.relpath(args.chart, Path.cwd())}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "database": database,
                    "views": views,
                    "year": year,
                    "today": today.isoformat(),
                    "author": author,
                    "uptime": _uptime(),
                    "cells": [result.as_json() for result in results],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
