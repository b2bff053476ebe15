"""seed_data speed on PostgreSQL: wall time to load N demo views through the ingest write path.

python bench/seed.py [--views 1000000]
"""

import argparse
import time

from common import DEFAULT_DATABASE_URL, bench_env, database_ensure, manage, seed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--views", type=int, default=1_000_000)
    args = parser.parse_args()

    env = bench_env(args.database_url)
    database_ensure(args.database_url)
    manage(env, "migrate", "--noinput", "-v0")
    started = time.monotonic()
    print(seed(env, views=args.views, authors=200, blogs=2000), end="")
    elapsed = time.monotonic() - started
    print(
        f"seed_data: {args.views:,} views in {elapsed:.1f} s ({args.views / elapsed:,.0f} views/s)"
    )


if __name__ == "__main__":
    main()
