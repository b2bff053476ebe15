"""`make bench`: every benchmark, on PostgreSQL (DATABASE_URL of the benchmark database below).

Each benchmark is also a script of its own; see bench/README.md.
"""

import subprocess
import sys
from pathlib import Path

from common import DEFAULT_BENCH_VIEWS, ROLLUPS_DATABASE_URL, bench_views

HERE = Path(__file__).resolve().parent

BENCHMARKS = [
    ["seed.py", "--views", "1000000"],
    ["ingest_http.py", "--seconds", "20", "--batch", "1000"],
    # Seeds BENCH_VIEWS views (default 10 M) on their own database the first time (a few minutes
    # at 10 M; at 100 M, with seed_data --bulk, most of an hour); --reuse keeps them.
    ["rollup_speed.py", "--reuse"],
    ["analytics_http.py", "--requests", "60"],
    # Seeds its own 10 M views the first time (seed_data --seed 7, 200 authors; minutes).
    ["matrix_http.py", "--requests", "30", "--cached-requests", "60", "--raw-runs", "3"],
    # On the same 10 M views: reads with 0-500 k views pending, then during ingest at 2 k and
    # 20 k views/s with a real worker and beat (the views it adds in the first part are deleted).
    ["tail_http.py"],
    # On the same 10 M views; needs chromium and chromium-driver (else it says so and skips).
    ["dashboard_speed.py", "--runs", "5"],
    ["audit_speed.py"],
]


def main() -> None:
    views = bench_views()
    print(
        f"== BENCH_VIEWS={views:,}: the rollup and read benchmarks at "
        f"{ROLLUPS_DATABASE_URL.rsplit('/', 1)[1]}",
        flush=True,
    )
    benchmarks = list(BENCHMARKS)
    if views != DEFAULT_BENCH_VIEWS:
        # The read matrix at this size beside the 10 M database (which must exist: run
        # `make bench` once without BENCH_VIEWS), and the p50 growth per cell.
        benchmarks.append(["matrix_growth.py"])
    for script, *args in benchmarks:
        print(f"== {script} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *args, *sys.argv[1:]], check=True)


if __name__ == "__main__":
    main()
