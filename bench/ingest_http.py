"""Ingest throughput over HTTP: gunicorn on PostgreSQL, batches of N views, concurrent clients.

    python bench/ingest_http.py [--seconds 20] [--batch 1000] [--clients 4] [--idempotency-keys]

Prints views/s and per-batch latency. With ``--idempotency-keys`` every request carries its own
``Idempotency-Key`` (what a careful client sends), so each one also stores its key. The clients
run on the same machine as the server, so the figure is a floor for what a separate client
machine would see.

Then, as the reference in the same run, the same views written straight into the same raw table
with ``COPY`` (one process, ``--copy-batch`` rows per statement and transaction, ``--copy-views``
in all), and the ratio of the two. The views are dated over the last 365 days, whose monthly
partitions (PostgreSQL) are created first, as ``seed_data`` does.
"""

import argparse
import http.client
import json
import multiprocessing
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from common import (
    DEFAULT_DATABASE_URL,
    bench_env,
    database_ensure,
    django_setup,
    gunicorn_serving,
    manage,
)


def _fixtures(blogs: int) -> tuple[str, list[int], list[str]]:
    """Staff user, blogs; return an access token, the blog ids and the country codes."""
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import RefreshToken

    from core.models import Blog, Country

    user, _ = get_user_model().objects.get_or_create(
        username="bench-ingest", defaults={"is_staff": True}
    )
    have = Blog.objects.filter(author=user).count()
    Blog.objects.bulk_create(Blog(title=f"bench {n}", author=user) for n in range(have, blogs))
    ids = list(Blog.objects.filter(author=user).values_list("pk", flat=True))
    codes = list(Country.objects.values_list("code", flat=True))
    return str(RefreshToken.for_user(user).access_token), ids, codes


def _bodies(ids: list[int], codes: list[str], batch: int, count: int) -> list[bytes]:
    rng = random.Random(7)
    now = datetime.now(UTC)
    bodies = []
    for _ in range(count):
        views = [
            {
                "blog_id": rng.choice(ids),
                "country_code": rng.choice(codes),
                "viewed_at": (now - timedelta(seconds=rng.randrange(365 * 86400))).isoformat(),
            }
            for _ in range(batch)
        ]
        bodies.append(json.dumps({"views": views}).encode())
    return bodies


def _client(
    args: tuple[int, str, list[bytes], float, bool],
) -> tuple[int, list[float], int]:
    port, token, bodies, deadline, keyed = args
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    accepted, latencies, errors = 0, [], 0
    n = 0
    while time.monotonic() < deadline:
        body = bodies[n % len(bodies)]
        n += 1
        if keyed:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        started = time.perf_counter()
        connection.request("POST", "/api/ingest/views/", body, headers)
        response = connection.getresponse()
        payload = response.read()
        latencies.append(time.perf_counter() - started)
        if response.status == 202:
            accepted += json.loads(payload)["accepted"]
        else:
            errors += 1
    connection.close()
    return accepted, latencies, errors


def _copy_reference(bodies: list[bytes], *, views: int, batch: int) -> float:
    """Views/s of ``COPY`` of the bodies' views, repeated up to ``views``, into the raw table."""
    import io

    from django.db import connection, transaction

    from ingest.models import BlogView

    rows = [
        f"{view['blog_id']}\t{view['country_code']}\t{view['viewed_at']}\n"
        for body in bodies
        for view in json.loads(body)["views"]
    ]
    table = BlogView._meta.db_table
    written = 0
    started = time.perf_counter()
    while written < views:
        size = min(batch, views - written)
        buffer = io.StringIO("".join(rows[(written + n) % len(rows)] for n in range(size)))
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.copy_expert(f"COPY {table} (blog_id, country_id, viewed_at) FROM STDIN", buffer)
        written += size
    return written / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--idempotency-keys", action="store_true", help="send a new Idempotency-Key per request"
    )
    parser.add_argument("--copy-views", type=int, default=1_000_000)
    parser.add_argument("--copy-batch", type=int, default=100_000)
    args = parser.parse_args()

    env = bench_env(args.database_url)
    database_ensure(args.database_url)
    manage(env, "migrate", "--noinput", "-v0")
    django_setup(env)
    from ingest.partitions import months_between, raw_partitions_ensure

    today = datetime.now(UTC).date()
    raw_partitions_ensure(months=months_between(today - timedelta(days=366), today))
    token, ids, codes = _fixtures(blogs=2000)
    bodies = _bodies(ids, codes, args.batch, count=20)

    env["WEB_CONCURRENCY"] = str(args.web_workers)
    with gunicorn_serving(env, args.port):
        deadline = time.monotonic() + args.seconds
        started = time.monotonic()
        with multiprocessing.Pool(args.clients) as pool:
            results = pool.map(
                _client,
                [(args.port, token, bodies, deadline, args.idempotency_keys)] * args.clients,
            )
        elapsed = time.monotonic() - started

    accepted = sum(r[0] for r in results)
    latencies = sorted(latency for r in results for latency in r[1])
    errors = sum(r[2] for r in results)
    p50 = statistics.median(latencies) * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    print(
        f"ingest over HTTP: {accepted / elapsed:,.0f} views/s "
        f"(batch {args.batch}, {args.clients} clients, {args.web_workers} gunicorn workers, "
        f"{'an Idempotency-Key per request' if args.idempotency_keys else 'no Idempotency-Key'}, "
        f"{len(latencies)} requests, {errors} errors; per batch p50 {p50:.1f} ms, p95 {p95:.1f} ms)"
    )
    if args.copy_views:
        copied = _copy_reference(bodies, views=args.copy_views, batch=args.copy_batch)
        print(
            f"COPY into the same table: {copied:,.0f} views/s ({args.copy_views:,} views, "
            f"{args.copy_batch:,} per COPY); HTTP ingest / COPY = {accepted / elapsed / copied:.2f}"
        )


if __name__ == "__main__":
    main()
