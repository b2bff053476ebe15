"""`make bench`: every benchmark, on PostgreSQL (DATABASE_URL of the benchmark database below).

Each benchmark is also a script of its own; see bench/README.md.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS = [
    ["seed.py", "--views", "1000000"],
    ["ingest_http.py", "--seconds", "20", "--batch", "1000"],
    # Seeds 10 M views on its own database the first time (a few minutes); --reuse keeps them.
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
    for script, *args in BENCHMARKS:
        print(f"== {script} {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, str(HERE / script), *args, *sys.argv[1:]], check=True)


if __name__ == "__main__":
    main()
