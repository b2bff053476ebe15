"""The read matrix at two sizes: uncached p50/p95 of every cell (bench/matrix.py) at a small and
a big database, and the p50 growth from one to the other.

    python bench/matrix_growth.py [--small-database-url URL] [--big-database-url URL]
        [--requests 15] [--port 8768]

Defaults: the rollup benchmark's 10 M database and the one for BENCH_VIEWS (e.g. 100 M). Each
database gets its own gunicorn (2 workers, no Redis: every request sends ``Cache-Control:
no-cache``); the cells are timed in turn, each at one size then the other, so that the machine's
load moves both alike. Every cell: one warm-up request, then ``--requests`` timed ones, each on a
new connection (the gthread workers close it after each answer). Targets per cell: p50 <= 25 ms,
p95 <= 60 ms at each size, and p50 growth <= 1.5x.

The year, the author (the one with the most views) and today are taken at the big database;
both databases are expected to be seeded alike (same --seed, same day), so they name the same
author.
"""

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from common import (
    DEFAULT_BENCH_VIEWS,
    ROLLUPS_DATABASE_URL,
    ROOT,
    bench_env,
    gunicorn_serving,
    rollups_database_url,
)
from matrix import Cell, cells

HERE = Path(__file__).resolve().parent
P50_GOAL, P95_GOAL, GROWTH_GOAL = 25.0, 60.0, 1.5

# Run by manage.py shell at each database: a reader's token, the busiest year, the top author.
_PROBE = """
import json, sys
sys.path.insert(0, {bench!r})
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.db.models.functions import ExtractYear
from rest_framework_simplejwt.tokens import RefreshToken
from matrix import biggest_author
from rollups.models import DailyViews
user, _ = get_user_model().objects.get_or_create(username="bench-reader")
year = (DailyViews.objects.annotate(y=ExtractYear("day")).values("y")
        .annotate(n=Sum("views")).order_by("-n").first() or {{"y": 2025}})["y"]
print(json.dumps({{"token": str(RefreshToken.for_user(user).access_token), "year": year,
                  "author": biggest_author()}}))
"""


def _probe(env: dict[str, str]) -> dict[str, object]:
    printed = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-c", _PROBE.format(bench=str(HERE))],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    return dict(json.loads(printed.strip().splitlines()[-1]))


class CellFailed(Exception):
    """A cell answered something else than 200 (e.g. 503 after the read timeout)."""


def _timed(port: int, token: str, cell: Cell) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps(cell.body).encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Cache-Control": "no-cache",
    }
    started = time.perf_counter()
    connection.request("POST", cell.path, body, headers)
    response = connection.getresponse()
    payload = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    connection.close()
    if response.status != 200:
        raise CellFailed(f"{response.status} {payload[:160]!r}")
    return elapsed


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small-database-url", default=rollups_database_url(DEFAULT_BENCH_VIEWS))
    parser.add_argument("--big-database-url", default=ROLLUPS_DATABASE_URL)
    parser.add_argument("--requests", type=int, default=15)
    parser.add_argument("--port", type=int, default=8768, help="the big one's; small: +1")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    sizes = [
        ("small", args.small_database_url, args.port + 1),
        ("big", args.big_database_url, args.port),
    ]
    envs = {}
    probes = {}
    for size, url, _ in sizes:
        env = bench_env(url)
        env.update({"WEB_CONCURRENCY": "2", "ANALYTICS_THROTTLE_USER": "1000000/min"})
        envs[size] = env
        probes[size] = _probe(env)
    big = probes["big"]
    if probes["small"]["author"] != big["author"]:
        print(
            f"note: the top author differs ({probes['small']['author']} at small, "
            f"{big['author']} at big): seeded differently; the big one's is used",
            flush=True,
        )
    today = datetime.now(UTC).date()
    matrix = cells(year=int(big["year"]), today=today, author=str(big["author"]))  # type: ignore[call-overload]
    print(
        f"matrix: {len(matrix)} cells, {args.requests} uncached requests each, year {big['year']}, "
        f"author {big['author']}; small {args.small_database_url.rsplit('/', 1)[1]}, big "
        f"{args.big_database_url.rsplit('/', 1)[1]}; load {_load()}",
        flush=True,
    )
    figures: list[dict[str, object]] = []
    with ExitStack() as servers:
        for size, _, port in sizes:
            servers.enter_context(gunicorn_serving(envs[size], port))
        header = (
            f"{'endpoint':<19} {'range':<8} {'filter':<21} "
            f"{'small p50/p95':>14} {'big p50/p95':>14} {'growth':>6}  verdict"
        )
        print(header, flush=True)
        failed = 0
        for cell in matrix:
            row: dict[str, object] = {"cell": cell.label}
            times = {}
            try:
                for size, _, port in sizes:
                    token = str(probes[size]["token"])
                    _timed(port, token, cell)
                    times[size] = [_timed(port, token, cell) for _ in range(args.requests)]
                    row[size] = {"p50": statistics.median(times[size]), "p95": _p95(times[size])}
            except CellFailed as error:
                # A missed cell, not the end of the run: the others still say how reads grow.
                failed += 1
                row["error"] = f"{size}: {error}"
                figures.append(row)
                print(
                    f"{cell.endpoint:<19} {cell.range_name:<8} {cell.filter_name:<21} "
                    f"FAILED at {size}: {error}",
                    flush=True,
                )
                continue
            small_p50, big_p50 = statistics.median(times["small"]), statistics.median(times["big"])
            growth = big_p50 / small_p50
            misses = [
                f"{size} {what}"
                for size in ("small", "big")
                for what, value, goal in (
                    ("p50", statistics.median(times[size]), P50_GOAL),
                    ("p95", _p95(times[size]), P95_GOAL),
                )
                if value > goal
            ]
            if growth > GROWTH_GOAL:
                misses.append("growth")
            row["growth"] = growth
            figures.append(row)
            print(
                f"{cell.endpoint:<19} {cell.range_name:<8} {cell.filter_name:<21} "
                f"{small_p50:6.1f}/{_p95(times['small']):6.1f} "
                f"{big_p50:6.1f}/{_p95(times['big']):6.1f} {growth:5.2f}x  "
                + ("MISSES " + ", ".join(misses) if misses else "meets"),
                flush=True,
            )
    growths = sorted(float(row["growth"]) for row in figures if "growth" in row)  # type: ignore[arg-type]
    if not growths:
        raise SystemExit(f"every cell failed; load {_load()}")
    print(
        f"matrix: p50 growth median {statistics.median(growths):.2f}x, max {growths[-1]:.2f}x "
        f"over {len(growths)} cells; {failed} cell(s) failed; load {_load()}",
        flush=True,
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
