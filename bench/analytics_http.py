"""Analytics read latency over HTTP: every seed query shape, uncached and cached.

    python bench/analytics_http.py [--database-url URL] [--requests 60]

Runs against an existing database (default: the one bench/rollup_speed.py fills with ~10 M views),
with gunicorn on PostgreSQL and Redis. Uncached = every request sends Cache-Control: no-cache;
cached = the same request repeated after one warm-up. One client at a time, so the figures are
per-request latency, not throughput.
"""

import argparse
import http.client
import json
import statistics
import time
from typing import Any

from common import bench_env, django_setup, gunicorn_serving

PORT = 8766
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/blogviews_bench_rollups"
REDIS_URL = "redis://127.0.0.1:6379/11"


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


def _timed(
    connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
) -> float:
    started = time.perf_counter()
    connection.request("POST", f"/api/analytics/{path}/", body, headers)
    response = connection.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"{path}: {response.status} {payload[:300]!r}")
    return elapsed * 1000


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()

    env = bench_env(args.database_url, redis_url=REDIS_URL)
    env.update({"WEB_CONCURRENCY": "2", "ANALYTICS_THROTTLE_USER": "1000000/min"})
    django_setup(env)
    token = _token()
    year = _busiest_year()
    with gunicorn_serving(env, PORT):
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        print(f"analytics over HTTP at {args.database_url.rsplit('/', 1)[1]}, year {year}:")
        for path, filters in _shapes(year):
            body = json.dumps(filters).encode()
            connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=60)
            uncached = [
                _timed(connection, path, body, {**auth, "Cache-Control": "no-cache"})
                for _ in range(args.requests)
            ]
            cached = [_timed(connection, path, body, auth) for _ in range(args.requests)]
            connection.close()
            print(
                f"  {path:<20} {json.dumps(filters):<62} uncached p50 "
                f"{statistics.median(uncached):6.1f} ms p95 {_percentile(uncached, 0.95):6.1f} ms"
                f" | cached p50 {statistics.median(cached):5.1f} ms p95 "
                f"{_percentile(cached, 0.95):5.1f} ms"
            )


if __name__ == "__main__":
    main()
