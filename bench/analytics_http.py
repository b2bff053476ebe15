"""Analytics read latency over HTTP: every query shape, uncached and cached, and the second
edition's: compare, GET (with 304s), CSV, cached reads by credential and connection, realtime
under a busy ingest.

    python bench/analytics_http.py [--database-url URL] [--requests 60] [--port P]
        [--redis-url URL] [--realtime-rates 100,2000] [--realtime-seconds 60]
        [--steps shapes,cached,realtime]

Runs against an existing database (default: the one bench/rollup_speed.py fills with ~10 M views),
with gunicorn on PostgreSQL and Redis. Uncached = every request sends Cache-Control: no-cache;
cached = the same request repeated after one warm-up; 304 = a GET sending the ETag it got. One
client at a time, so the figures are per-request latency, not throughput.

``cached``: one cached answer read with a JWT and with an API key, each over one kept-alive
connection and over a new connection per request, in interleaved rounds, on a second server
with the web process's own configuration (gunicorn.conf.py keeps connections alive).

Realtime is measured last: quiet, then for each rate of ``--realtime-rates``, while a forked
process ingests that many views/s (``viewed_at`` = now) through ``views_record``, with a real
Celery worker and beat at their default settings: beat's absorb every
``ROLLUP_INTERVAL_SECONDS`` and tending of the realtime tables every minute, and the absorb runs
ingest's trigger sends once ``ABSORB_TRIGGER_PENDING`` views are pending (as deployed), after
the last 30 minutes were filled at that rate and absorbed: that writes to the database.
Requests are spread over ``--realtime-seconds``, so that they meet every size of the unabsorbed
tail. ``--realtime-rates 0`` measures it quiet only and writes nothing.
"""

import argparse
import http.client
import json
import math
import multiprocessing
import os
import random
import statistics
import time
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from common import (
    ROLLUPS_DATABASE_URL,
    absorb_runs,
    bench_env,
    django_setup,
    gunicorn_serving,
    without_rollup_settings,
    worker_and_beat,
)

PORT = 8766
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


def _api_key() -> str:
    """A new read key of the benchmark's reader (the earlier runs' keys are deleted)."""
    from django.contrib.auth import get_user_model

    from apikeys.models import ApiKey
    from apikeys.services import api_key_create

    user, _ = get_user_model().objects.get_or_create(username="bench-reader")
    ApiKey.objects.filter(user=user, name="bench").delete()
    _, secret = api_key_create(name="bench", user=user, scope=ApiKey.Scope.READ)
    return secret


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
    """One kept-alive connection (reopened when the server closes it), or with ``fresh`` a new
    connection per request; every answer checked."""

    def __init__(self, port: int, token: str, *, scheme: str = "Bearer", fresh: bool = False):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.auth = {"Authorization": f"{scheme} {token}"}
        self.fresh = fresh
        if fresh:
            self.auth["Connection"] = "close"
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
        for attempt in range(2):
            started = time.perf_counter()
            try:
                self.connection.request(method, url, body, sent)
                response = self.connection.getresponse()
                payload = response.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # The server closed the kept connection while it was idle (its keep-alive
                # timeout): once more on a new one, timed from there (as matrix.Reader does).
                self.connection.close()
                if self.fresh or attempt:
                    raise
                continue
            break
        if self.fresh:
            self.connection.close()
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
    batch = max(1, min(INGEST_BATCH, int(rate / 10)))
    interval = batch / rate
    next_at = time.monotonic()
    deadline = next_at + seconds
    while time.monotonic() < deadline:
        time.sleep(max(0.0, next_at - time.monotonic()))
        now = timezone.now()
        views_record(views=[(rng.choice(blogs), rng.choice(codes), now) for _ in range(batch)])
        next_at += interval


def _paced(
    client: Client, url: str, count: int, seconds: float, headers: dict[str, str]
) -> list[float]:
    """``count`` timed GETs of ``url`` spread evenly over ``seconds``."""
    times = []
    next_at = time.monotonic()
    for _ in range(count):
        time.sleep(max(0.0, next_at - time.monotonic()))
        times.append(client.timed("GET", url, headers=headers))
        next_at += seconds / count
    return times


def _realtime(
    client: Client,
    requests: int,
    rates: list[float],
    seconds: float,
    celery_env: dict[str, str],
    redis_url: str,
) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connections
    from django.db.models import Count
    from django.utils import timezone

    from core.models import Blog
    from ingest.services import views_record
    from rollups.absorb import rollups_absorb_pending
    from rollups.tables import RAW
    from rollups.tending import recent_tables_tend

    author = (
        get_user_model()
        .objects.filter(pk__in=Blog.objects.values("author_id"))
        .values_list("username", flat=True)
        .order_by("pk")
        .first()
    )
    # And the author with the most views in the window (else with the most blogs): an author's
    # rows are read blog by blog, so the biggest one is the costliest.
    since = timezone.now() - timedelta(minutes=30)
    users = get_user_model().objects
    biggest = (
        users.filter(blogs__views__viewed_at__gte=since)
        .annotate(window_views=Count("blogs__views"))
        .order_by("-window_views", "pk")
        .values_list("username", flat=True)
        .first()
    ) or (
        users.annotate(blog_count=Count("blogs"))
        .order_by("-blog_count", "pk")
        .values_list("username", flat=True)
        .first()
    )
    variants = [
        ("", "no filter"),
        ("?country_codes=US,DE", "country_codes=US,DE"),
        ("?exclude_country_codes=US", "exclude_country_codes=US"),
        (f"?author_username={author}", "author_username (first)"),
    ]
    if biggest is not None and biggest != author:
        variants.append((f"?author_username={biggest}", "author_username (most views)"))

    def measure(label: str, spread: float) -> None:
        base = "/api/analytics/realtime/"
        for query, shown in variants:
            uncached = _paced(client, base + query, requests, spread, {"Cache-Control": "no-cache"})
            cached = _paced(client, base + query, requests, spread / 4, {})
            print(
                f"  realtime  {label:<60} {shown:<26} uncached {_figures(uncached)} | "
                f"cached {_figures(cached)} | load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            print(f"            EXPLAIN ANALYZE: {_realtime_explained(query[1:])}", flush=True)

    rollups_absorb_pending()
    # As beat's tending would have left the realtime tables (rollups.tending).
    recent_tables_tend()
    measure("quiet", 0)
    blogs = list(Blog.objects.values_list("pk", flat=True))
    codes = ["US", "IN", "DE", "GB", "BR", "FR", "JP", "ET", "ZZ", "CA"]
    rng = random.Random(7)
    for rate in rates:
        if rate <= 0:
            continue
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
        recent_tables_tend()
        # The raw views' statistics as autovacuum would leave them after this many new views
        # (this machine's server runs with it off): else the raw window's reference EXPLAIN
        # plans for the views of the last seeding and reads millions through the viewed_at
        # index, past the statement timeout.
        with connections["default"].cursor() as cursor:
            cursor.execute(f"ANALYZE {RAW}")
        connections.close_all()
        duration = 2 + len(variants) * seconds * 1.25 + 5
        fork = multiprocessing.get_context("fork")
        with worker_and_beat(celery_env, redis_url, "realtime") as logs:
            ingest = fork.Process(target=_ingest, args=(rate, duration, blogs, codes))
            ingest.start()
            try:
                time.sleep(2)
                measure(
                    f"ingest {rate:,.0f} views/s + worker, ~{backlog:,} views in the window",
                    seconds,
                )
            finally:
                ingest.terminate()
                ingest.join()
        print(f"    (summaries: {absorb_runs(logs)})", flush=True)
        print(f"    (per-minute rows: {absorb_runs(logs, 'rollups.absorb_recent')})", flush=True)


def _realtime_explained(query: str, runs: int = 5) -> str:
    """The realtime answer's statements as the database runs them, by ``EXPLAIN (ANALYZE,
    BUFFERS)``: from the per-minute levels and from the raw window, alternately, ``runs`` times
    each; median execution time and buffers touched. Less sensitive to a busy machine than the
    times over HTTP."""
    from datetime import UTC
    from urllib.parse import parse_qs

    from django.db import connection

    from api import planner
    from api.spec import REALTIME, REALTIME_FILTERS, query_payload, spec_parse
    from core import sql as core_sql
    from core.exceptions import ApplicationError

    spec = spec_parse(
        payload=query_payload(query=parse_qs(query), extras=REALTIME),
        extras=REALTIME,
        filters=REALTIME_FILTERS,
    )
    found: dict[str, list[tuple[float, int]]] = {"per-minute rows": [], "raw window": []}
    for _ in range(runs):
        for label, answer in (
            ("per-minute rows", planner._recent_from_minutes),
            ("raw window", planner._recent_from_raw),
        ):
            statements: list[Any] = []

            def capture(
                statement: Any, statements: list[Any] = statements
            ) -> list[tuple[Any, ...]]:
                statements.append(statement)
                return core_sql.fetch_all(statement)

            planner.fetch_all = capture  # type: ignore[assignment]
            try:
                with planner.read_snapshot() as snapshot:
                    current = snapshot.as_of.astimezone(UTC).replace(second=0, microsecond=0)
                    start = current - timedelta(minutes=29)
                    facts = planner.facts_for(spec, snapshot)
                    assert facts is not None
                    answer(facts, start, current + timedelta(minutes=1), 10)
                    milliseconds, buffers = 0.0, 0
                    with connection.cursor() as cursor:
                        for statement in statements:
                            cursor.execute(
                                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement.text,
                                statement.params,
                            )
                            plan = cursor.fetchone()[0][0]
                            milliseconds += plan["Execution Time"]
                            top = plan["Plan"]
                            buffers += top.get("Shared Hit Blocks", 0) + top.get(
                                "Shared Read Blocks", 0
                            )
            except ApplicationError:
                # The raw window of a busy half hour (3.6 M views at 2,000 views/s, 1.8-2.2 s)
                # can pass the statement timeout (it did in three runs before the raw table was
                # analyzed after the fill): a figure to report, not a reason to stop the run.
                found[label].append((math.inf, 0))
            else:
                found[label].append((milliseconds, buffers))
            finally:
                planner.fetch_all = core_sql.fetch_all

    def shown(runs_found: list[tuple[float, int]]) -> str:
        milliseconds = statistics.median(ms for ms, _ in runs_found)
        if math.isinf(milliseconds):
            return "over the statement timeout"
        return (
            f"{milliseconds:.1f} ms / {int(statistics.median(b for _, b in runs_found)):,} buffers"
        )

    return ", ".join(f"{label} {shown(runs_found)}" for label, runs_found in found.items())


def _cached(port: int, env: dict[str, str], requests: int, year: int) -> None:
    """One cached answer with a JWT and with an API key, over one kept-alive connection and
    over a new connection per request, in interleaved rounds (the project's gunicorn keeps
    connections alive)."""
    token, key = _token(), _api_key()
    url = "/api/analytics/blog-views/country/"
    body = json.dumps({"year": year, "exclude_country_codes": ["US"]}).encode()
    clients = {
        (credential, connection): Client(port, secret, scheme=scheme, fresh=fresh)
        for credential, scheme, secret in (("JWT", "Bearer", token), ("API key", "Api-Key", key))
        for connection, fresh in (("kept-alive", False), ("new connection", True))
    }
    times: dict[tuple[str, str], list[float]] = {combo: [] for combo in clients}
    with gunicorn_serving(env, port):
        for client in clients.values():
            for _ in range(5):
                client.timed("POST", url, body)
        rounds = 10
        for _ in range(rounds):
            for combo, client in clients.items():
                times[combo] += [
                    client.timed("POST", url, body) for _ in range(max(1, requests // rounds))
                ]
        for (credential, connection), found in times.items():
            print(
                f"  cached    {credential:<8} {connection:<15} POST blog-views/country "
                f"{json.dumps({'year': year, 'exclude_country_codes': ['US']})} "
                f"{_figures(found)} | load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        for client in clients.values():
            client.close()


def _shapes_all(client: Client, requests: int, year: int) -> None:
    """Every shape: the seed's and the others, compare, GET, CSV."""
    for path, filters in _shapes(year):
        _post_shape(client, requests, "POST", path, filters)
    for path, filters in _compare_shapes(year):
        compared = {**filters, "compare": "previous_year"}
        _post_shape(client, requests, "compare", path, compared)
    _post_shape(
        client,
        requests,
        "compare",
        "top/blog",
        {"year": year, "compare": "previous_period"},
    )
    for path, filters in (
        ("blog-views/country", {"year": year, "exclude_country_codes": ["US"]}),
        ("top/blog", {"year": year, "country_codes": ["US", "DE"]}),
        ("performance", {"year": year, "compare_period": "week"}),
    ):
        _get_shape(client, requests, "GET", path, filters)
    _get_shape(
        client,
        requests,
        "CSV",
        "blog-views/user",
        {"year": year, "limit": 1000, "format": "csv"},
    )
    last = date(year, 12, 31)
    first = last - timedelta(days=999)
    _get_shape(
        client,
        requests,
        "CSV",
        "performance",
        {
            "start_date": first.isoformat(),
            "end_date": last.isoformat(),
            "compare_period": "day",
            "format": "csv",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", default=ROLLUPS_DATABASE_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--port", type=int, default=PORT)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument(
        "--realtime-rates", default="100,2000", help="ingest rates (views/s), comma-separated"
    )
    parser.add_argument("--realtime-seconds", type=float, default=60.0)
    parser.add_argument("--steps", default="shapes,cached,realtime")
    args = parser.parse_args()
    steps = set(args.steps.split(","))

    env = bench_env(args.database_url, redis_url=args.redis_url)
    env.update(
        {
            "WEB_CONCURRENCY": "2",
            "ANALYTICS_THROTTLE_USER": "1000000/min",
            "API_KEY_THROTTLE": "1000000/min",
        }
    )
    django_setup(env)
    token = _token()
    year = _busiest_year()
    print(f"analytics over HTTP at {args.database_url.rsplit('/', 1)[1]}, year {year}:")
    if "cached" in steps:
        _cached(args.port + 1, env, args.requests * 2, year)
    with gunicorn_serving(env, args.port):
        client = Client(args.port, token)
        if "shapes" in steps:
            _shapes_all(client, args.requests, year)
        if "realtime" in steps:
            # Last: it writes views.
            rates = [float(rate) for rate in args.realtime_rates.split(",") if rate.strip()]
            # The worker and beat at their default settings (ingest's trigger included).
            celery_env = without_rollup_settings(env)
            _realtime(
                client, args.requests, rates, args.realtime_seconds, celery_env, args.redis_url
            )
        client.close()


if __name__ == "__main__":
    main()
