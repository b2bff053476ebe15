"""seed_data speed on PostgreSQL: wall time to load N demo views through the ingest write path.

python bench/seed.py [--views 1000000]
"""

import argparse
import subprocess
import sys
import time

from common import DEFAULT_DATABASE_URL, ROOT, bench_env, database_ensure, manage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--views", type=int, default=1_000_000)
    args = parser.parse_args()

    env = bench_env(args.database_url)
    database_ensure(args.database_url)
    manage(env, "migrate", "--noinput", "-v0")
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "seed_data",
            "--reset",
            "--seed",
            "1",
            "--views",
            str(args.views),
            "--authors",
            "200",
            "--blogs",
            "2000",
        ],
        env=env,
        check=True,
        cwd=ROOT,
    )
    elapsed = time.monotonic() - started
    print(
        f"seed_data: {args.views:,} views in {elapsed:.1f} s ({args.views / elapsed:,.0f} views/s)"
    )


if __name__ == "__main__":
    main()
