"""Analytics read latency over HTTP: every query shape, uncached and cached, and the second
edition's: compare, GET (with 304s), CSV, realtime under a busy ingest.

    python bench/analytics_http.py [--database-url URL] [--requests 60] [--port P]
        [--redis-url URL] [--realtime-rate R]

Runs against an existing database (default: the one bench/rollup_speed.py fills with ~10 M views),
with gunicorn on PostgreSQL and Redis. Uncached = every request sends Cache-Control: no-cache;
cached = the same request repeated after one warm-up; 304 = a GET sending the ETag it got. One
client at a time, so the figures are per-request latency, not throughput.

Realtime is measured last: quiet, then while a forked process ingests ``--realtime-rate`` views/s
(``viewed_at`` = now) after the last 30 minutes were filled at that rate (then absorbed, as
beat would have): that writes to the database. ``--realtime-rate 0`` measures it quiet only
and writes nothing.
"""

import argparse
import http.client
import json
import multiprocessing
import random
import statistics
import time
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from common import bench_env, django_setup, gunicorn_serving

PORT = 8766
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/blogviews_bench_rollups"
REDIS_URL = "redis://127.0.0.1:6379/11"
INGEST_BATCH = 100


def _shapes(year: int) -> list[tuple[str, dict[str, Any]]]:
    """The seed README's three calls (with a year that holds data), then the other shapes."""
    return [
        ("blog-views/country", {"year": year, "exclude_country_codes": ["US"]}),
        ("top/blog", {}),
        ("performance", {"year": year, "compare_period": "week"}),
        ("blog-views/user", {"year": year}),
        ("top/user", {"country_codes": ["US", "IN", "DE"]}),
        ("top/country", {"start_date": f"{year}-02-10", "end_date": f"{year}-05-20"}),
        ("performance", {}),
        ("top/blog", {"year": year, "exclude_country_codes": ["US"]}),
    ]


def _compare_shapes(year: int) -> list[tuple[str, dict[str, Any]]]:
    """The seed's three calls with compare (top/blog's {} has no start: its year)."""
    return [
        ("blog-views/country", {"year": year, "exclude_country_codes": ["US"]}),
        ("top/blog", {"year": year}),
        ("performance", {"year": year, "compare_period": "week"}),
    ]


def _token() -> str:
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import RefreshToken

    user, _ = get_user_model().objects.get_or_create(username="bench-reader")
    return str(RefreshToken.for_user(user).access_token)


def _busiest_year() -> int:
    from django.db.models import Count
    from django.db.models.functions import ExtractYear

    from ingest.models import BlogView

    rows = (
        BlogView.objects.annotate(year=ExtractYear("viewed_at"))
        .values("year")
        .annotate(n=Count("id"))
        .order_by("-n")[:1]
    )
    return rows[0]["year"] if rows else 2025


class Client:
    """One kept-alive connection (reopened when the server closes it); every answer checked."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.headers: dict[str, str] = {}
        self.size = 0

    def timed(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: int = 200,
    ) -> float:
        sent = {**self.auth, **(headers or {})}
        if body is not None:
            sent["Content-Type"] = "application/json"
        started = time.perf_counter()
        self.connection.request(method, url, body, sent)
        response = self.connection.getresponse()
        payload = response.read()
        elapsed = time.perf_counter() - started
        if response.status != expect:
            raise SystemExit(f"{method} {url}: {response.status} {payload[:300]!r}")
        self.headers = dict(response.getheaders())
        self.size = len(payload)
        return elapsed * 1000

    def close(self) -> None:
        self.connection.close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def _figures(times: list[float]) -> str:
    return f"p50 {statistics.median(times):6.1f} ms p95 {_percentile(times, 0.95):6.1f} ms"


def _query(filters: dict[str, Any]) -> str:
    return urlencode(
        {k: ",".join(v) if isinstance(v, list) else v for k, v in filters.items()}, safe=","
    )


def _post_shape(
    client: Client, requests: int, label: str, path: str, filters: dict[str, Any]
) -> None:
    url, body = f"/api/analytics/{path}/", json.dumps(filters).encode()
    uncached = [
        client.timed("POST", url, body, {"Cache-Control": "no-cache"}) for _ in range(requests)
    ]
    cached = [client.timed("POST", url, body) for _ in range(requests)]
    print(
        f"  {label:<9} {path:<19} {json.dumps(filters):<78} uncached {_figures(uncached)} | "
        f"cached {_figures(cached)}",
        flush=True,
    )


def _get_shape(
    client: Client, requests: int, label: str, path: str, filters: dict[str, Any], accept: str = ""
) -> None:
    url = f"/api/analytics/{path}/?{_query(filters)}"
    headers = {"Accept": accept} if accept else {}
    uncached = [
        client.timed("GET", url, headers={**headers, "Cache-Control": "no-cache"})
        for _ in range(requests)
    ]
    size = client.size
    cached = [client.timed("GET", url, headers=headers) for _ in range(requests)]
    etag = client.headers["ETag"]
    revalidated = [
        client.timed("GET", url, headers={**headers, "If-None-Match": etag}, expect=304)
        for _ in range(requests)
    ]
    print(
        f"  {label:<9} {path:<19} {'?' + _query(filters):<78} uncached {_figures(uncached)} | "
        f"cached {_figures(cached)} | 304 {_figures(revalidated)} | {size:,} bytes",
        flush=True,
    )


def _ingest(rate: float, seconds: float, blogs: list[int], codes: list[str]) -> None:
    """Write ``rate`` views/s (``viewed_at`` = now) for ``seconds``, in batches (forked)."""
    from django.utils import timezone

    from ingest.services import views_record

    rng = random.Random(5)
    interval = INGEST_BATCH / rate
    next_at = time.monotonic()
    deadline = next_at + seconds
    while time.monotonic() < deadline:
        time.sleep(max(0.0, next_at - time.monotonic()))
        now = timezone.now()
        views_record(
            views=[(rng.choice(blogs), rng.choice(codes), now) for _ in range(INGEST_BATCH)]
        )
        next_at += interval


def _realtime(client: Client, requests: int, rate: float) -> None:
    from django.db import connections
    from django.utils import timezone

    from core.models import Blog
    from ingest.services import views_record
    from rollups.absorb import rollups_absorb_pending

    url = "/api/analytics/realtime/"

    def measure(label: str) -> None:
        uncached = [
            client.timed("GET", url, headers={"Cache-Control": "no-cache"}) for _ in range(requests)
        ]
        cached = [client.timed("GET", url) for _ in range(requests)]
        print(
            f"  realtime  {label:<98} uncached {_figures(uncached)} | cached {_figures(cached)}",
            flush=True,
        )

    measure("quiet")
    if rate <= 0:
        return
    blogs = list(Blog.objects.values_list("pk", flat=True))
    codes = ["US", "IN", "DE", "GB", "BR", "FR", "JP", "ET", "ZZ", "CA"]
    rng = random.Random(7)
    now = timezone.now()
    # The last 30 minutes as a steady ingest at this rate would have left them, absorbed.
    backlog = int(rate * 30 * 60)
    for first in range(0, backlog, 100_000):
        views_record(
            views=[
                (
                    rng.choice(blogs),
                    rng.choice(codes),
                    now - timedelta(seconds=rng.uniform(0, 1800)),
                )
                for _ in range(min(100_000, backlog - first))
            ]
        )
    rollups_absorb_pending()
    connections.close_all()
    ingest = multiprocessing.get_context("fork").Process(
        target=_ingest, args=(rate, requests * 2 + 60, blogs, codes)
    )
    ingest.start()
    try:
        time.sleep(2)
        measure(f"ingest {rate:,.0f} views/s, ~{backlog:,} views in the window")
    finally:
        ingest.terminate()
        ingest.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--realtime-rate", type=float, default=100.0)
    args = parser.parse_args()

    env = bench_env(args.database_url, redis_url=args.redis_url)
    env.update({"WEB_CONCURRENCY": "2", "ANALYTICS_THROTTLE_USER": "1000000/min"})
    django_setup(env)
    token = _token()
    year = _busiest_year()
    with gunicorn_serving(env, args.port):
        client = Client(args.port, token)
        print(f"analytics over HTTP at {args.database_url.rsplit('/', 1)[1]}, year {year}:")
        for path, filters in _shapes(year):
            _post_shape(client, args.requests, "POST", path, filters)
        for path, filters in _compare_shapes(year):
            compared = {**filters, "compare": "previous_year"}
            _post_shape(client, args.requests, "compare", path, compared)
        _post_shape(
            client,
            args.requests,
            "compare",
            "top/blog",
            {"year": year, "compare": "previous_period"},
        )
        for path, filters in (
            ("blog-views/country", {"year": year, "exclude_country_codes": ["US"]}),
            ("top/blog", {"year": year, "country_codes": ["US", "DE"]}),
            ("performance", {"year": year, "compare_period": "week"}),
        ):
            _get_shape(client, args.requests, "GET", path, filters)
        _get_shape(
            client,
            args.requests,
            "CSV",
            "blog-views/user",
            {"year": year, "limit": 1000, "format": "csv"},
        )
        last = date(year, 12, 31)
        first = last - timedelta(days=999)
        _get_shape(
            client,
            args.requests,
            "CSV",
            "performance",
            {
                "start_date": first.isoformat(),
                "end_date": last.isoformat(),
                "compare_period": "day",
                "format": "csv",
            },
        )
        _realtime(client, args.requests, args.realtime_rate)
        client.close()


if __name__ == "__main__":
    main()
