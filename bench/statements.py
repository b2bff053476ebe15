"""One analytics answer's SQL statements, each timed, in the process: where a read spends.

    python bench/statements.py PATH [BODY] [--database-url URL] [--runs 10] [--explain]

PATH is an analytics endpoint as in the API (``blog-views/country``, ``top/blog``,
``performance``, ``realtime``, ...), BODY its JSON body (a query string for ``realtime``). The
request goes through the whole Django stack (no HTTP server, no cache: ``Cache-Control:
no-cache``, public reads on), ``--runs`` times; it prints each run's total and then every
statement of the last run with its time, and with ``--explain`` the ``EXPLAIN (ANALYZE,
BUFFERS)`` of each statement over 2 ms (run again, inside no snapshot: a statement that
depends on the snapshot's settings may plan differently). Default database: the read
matrix's (``bench/matrix_http.py``). The figures of one run move with the machine's load:
compare two versions of the code in turn, not across runs.
"""

import argparse
import time
from typing import Any

from common import bench_env, django_setup

MATRIX_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/blogviews_bench_matrix"
EXPLAIN_FROM_MS = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", help="e.g. blog-views/country, top/blog, performance, realtime")
    parser.add_argument("body", nargs="?", default="{}", help="JSON body (realtime: a query)")
    parser.add_argument("--database-url", default=MATRIX_DATABASE_URL)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--explain", action="store_true")
    args = parser.parse_args()

    env = bench_env(args.database_url)
    env["ANALYTICS_PUBLIC_READ"] = "true"
    env["ANALYTICS_CACHE_SECONDS"] = "0"
    django_setup(env)
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_HOST="localhost", HTTP_CACHE_CONTROL="no-cache")
    path = args.path.strip("/")
    url = f"/api/analytics/{path}/"
    statements: list[tuple[float, str, Any]] = []

    def timed(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            statements.append(((time.perf_counter() - started) * 1000, sql, params))

    def ask() -> None:
        if path == "realtime":
            response = client.get(url + (f"?{args.body}" if args.body != "{}" else ""))
        else:
            response = client.post(url, args.body, content_type="application/json")
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}: {response.content[:300]!r}")

    totals = []
    with connection.execute_wrapper(timed):
        for _ in range(args.runs):
            statements.clear()
            started = time.perf_counter()
            ask()
            totals.append((time.perf_counter() - started) * 1000)
    print(f"{url} {args.body} at {args.database_url.rsplit('/', 1)[1]}")
    print("per run (ms): " + " ".join(f"{total:.1f}" for total in totals))
    print(f"the last run's {len(statements)} statements:")
    for elapsed, sql, _ in statements:
        print(f"  {elapsed:8.2f} ms  {' '.join(sql.split())[:150]}")
    if args.explain:
        with connection.cursor() as cursor:
            for elapsed, sql, params in statements:
                if elapsed < EXPLAIN_FROM_MS or not sql.lstrip().upper().startswith(
                    ("SELECT", "WITH")
                ):
                    continue
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                print(f"\n{elapsed:.2f} ms: {' '.join(sql.split())[:150]}")
                print("\n".join(row[0] for row in cursor.fetchall()))


if __name__ == "__main__":
    main()
