"""The read matrix: every analytics endpoint x a range x a filter, the cells that the read
benchmarks (the matrix at rest, the tail-cost curve, reads during sustained ingest) time.

A cell is one POST body for one endpoint. Ranges and filters are the ones issue #11 names:

- ranges: all time, a year (the busiest one), Feb-May of that year, the last 90 days, the last
  30 days (both ending today);
- filters: none, 3 countries, excluding US, one author (the one with the most views, all time),
  that author and 2 countries.
"""

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

ENDPOINTS = (
    "blog-views/country",
    "blog-views/user",
    "top/blog",
    "top/user",
    "top/country",
    "performance",
)
RANGE_NAMES = ("all time", "year", "Feb-May", "90 days", "30 days")
FILTER_NAMES = ("none", "3 countries", "excl US", "author", "author + 2 countries")
THREE_COUNTRIES = ["US", "IN", "DE"]
TWO_COUNTRIES = ["US", "IN"]


@dataclass(frozen=True)
class Cell:
    endpoint: str
    range_name: str
    filter_name: str
    body: dict[str, Any]

    @property
    def path(self) -> str:
        return f"/api/analytics/{self.endpoint}/"

    @property
    def label(self) -> str:
        return f"{self.endpoint} | {self.range_name} | {self.filter_name}"


def ranges(*, year: int, today: date) -> dict[str, dict[str, Any]]:
    """Each range's fields. All time sends none (an open range)."""
    return {
        "all time": {},
        "year": {"year": year},
        "Feb-May": {"start_date": f"{year}-02-01", "end_date": f"{year}-05-31"},
        "90 days": {
            "start_date": (today - timedelta(days=89)).isoformat(),
            "end_date": today.isoformat(),
        },
        "30 days": {
            "start_date": (today - timedelta(days=29)).isoformat(),
            "end_date": today.isoformat(),
        },
    }


def filters(*, author: str) -> dict[str, dict[str, Any]]:
    """Each filter's fields."""
    return {
        "none": {},
        "3 countries": {"country_codes": THREE_COUNTRIES},
        "excl US": {"exclude_country_codes": ["US"]},
        "author": {"author_username": author},
        "author + 2 countries": {"author_username": author, "country_codes": TWO_COUNTRIES},
    }


def cells(*, year: int, today: date, author: str) -> list[Cell]:
    """Every cell, endpoint by endpoint, range by range, filter by filter."""
    range_fields = ranges(year=year, today=today)
    filter_fields = filters(author=author)
    return [
        Cell(
            endpoint,
            range_name,
            filter_name,
            {**range_fields[range_name], **filter_fields[filter_name]},
        )
        for endpoint in ENDPOINTS
        for range_name in RANGE_NAMES
        for filter_name in FILTER_NAMES
    ]


def biggest_author() -> str:
    """The username of the author whose blogs have the most views, all time (from the monthly
    blog summaries, which count every absorbed view). Needs Django set up."""
    from django.db.models import Sum

    from rollups.models import MonthlyBlogViews

    row = (
        MonthlyBlogViews.objects.values("blog__author__username")
        .annotate(total=Sum("views"))
        .order_by("-total")
        .first()
    )
    if row is None:
        raise SystemExit("no absorbed views: seed and absorb the database first")
    return str(row["blog__author__username"])


# --- Timing cells over HTTP (stdlib only: any script can import it) ----------------------------

UNCACHED = "uncached"
CACHED = "cached"
CACHED_NEW_CONNECTION = "cached, new connection"
MODES = (UNCACHED, CACHED, CACHED_NEW_CONNECTION)


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank, no interpolation)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


@dataclass
class CellTimes:
    """One cell's request times in ms by mode, and the JSON answer it got (uncached)."""

    cell: Cell
    times: dict[str, list[float]]
    answer: dict[str, Any]

    def p50(self, mode: str) -> float:
        return percentile(self.times[mode], 0.5)

    def p95(self, mode: str) -> float:
        return percentile(self.times[mode], 0.95)


class Reader:
    """POSTs cells to the read API of a server on 127.0.0.1, timed from the client.

    Uncached requests send ``Cache-Control: no-cache``. With ``new_connection`` each request
    opens its own TCP connection (and closes it after the answer); else one connection is kept
    and reused for as long as the server keeps it open (``http.client`` reconnects when the
    server closed it, and that connect is then part of the request's time).
    """

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.kept = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(
        self, cell: Cell, *, cached: bool, new_connection: bool = False
    ) -> tuple[float, bytes]:
        """``(ms, body)`` of one POST of ``cell``; a status other than 200 ends the run."""
        headers = dict(self.auth)
        if not cached:
            headers["Cache-Control"] = "no-cache"
        body = json.dumps(cell.body).encode()
        for attempt in range(2):
            started = time.perf_counter()
            connection = (
                http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if new_connection
                else self.kept
            )
            try:
                connection.request("POST", cell.path, body, headers)
                response = connection.getresponse()
                payload = response.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # The server closed the kept connection while it was idle (its keep-alive
                # timeout): once more on a new one, timed from there.
                connection.close()
                if new_connection or attempt:
                    raise
                continue
            finally:
                if new_connection:
                    connection.close()
            break
        elapsed = (time.perf_counter() - started) * 1000
        if response.status != 200:
            raise SystemExit(f"{cell.label}: {response.status} {payload[:300]!r}")
        return elapsed, payload

    def close(self) -> None:
        self.kept.close()


def cells_time(
    reader: Reader,
    cells: list[Cell],
    *,
    requests: int,
    cached_requests: int,
    modes: tuple[str, ...] = MODES,
    progress: Callable[[CellTimes], None] | None = None,
) -> list[CellTimes]:
    """Time each cell in each of ``modes``, cell after cell: ``requests`` uncached requests
    (after one untimed, whose answer is kept), then ``cached_requests`` cached ones over the
    kept connection, then as many on a new connection each. A cell's cached requests follow
    its uncached ones at once, so they find the answer the last uncached one stored."""
    timed = []
    for cell in cells:
        _, payload = reader.post(cell, cached=False)
        times: dict[str, list[float]] = {}
        for mode in modes:
            count = requests if mode == UNCACHED else cached_requests
            times[mode] = [
                reader.post(
                    cell, cached=mode != UNCACHED, new_connection=mode == CACHED_NEW_CONNECTION
                )[0]
                for _ in range(count)
            ]
        result = CellTimes(cell, times, json.loads(payload))
        if progress is not None:
            progress(result)
        timed.append(result)
    return timed


# --- The raw-scan answer (needs Django set up) -------------------------------------------------


def cell_days(cell: Cell) -> tuple[date | None, date | None]:
    """The first and last day a cell's body asks for (``None``: open)."""
    body = cell.body
    if "year" in body:
        return date(body["year"], 1, 1), date(body["year"], 12, 31)
    start, end = body.get("start_date"), body.get("end_date")
    return (
        date.fromisoformat(start) if start else None,
        date.fromisoformat(end) if end else None,
    )


def raw_scan(cell: Cell, *, granularity: str | None = None) -> list[tuple[Any, ...]]:
    """The cell's groups counted straight from the raw views, the way the seed's code counted
    them: Django's ``values()`` + ``annotate()`` over the raw table, one ``GROUP BY`` (with
    ``COUNT(DISTINCT blog)`` where the answer has blogs) per question, every group returned.

    Rows: country ``(code, views, blogs)``, user ``(username, views, blogs)``, blog
    ``(blog_id, title, username, views)``, performance ``(bucket start, views)`` by
    ``granularity`` (``day``, ``week``, ``month`` or ``year``: the answer's).
    """
    from datetime import UTC, datetime

    from django.db.models import Count
    from django.db.models.functions import Trunc

    from ingest.models import BlogView

    views = BlogView.objects.all()
    start, end = cell_days(cell)
    if start is not None:
        views = views.filter(viewed_at__gte=datetime.combine(start, datetime.min.time(), UTC))
    if end is not None:
        after = end + timedelta(days=1)
        views = views.filter(viewed_at__lt=datetime.combine(after, datetime.min.time(), UTC))
    if cell.body.get("country_codes"):
        views = views.filter(country_id__in=cell.body["country_codes"])
    if cell.body.get("exclude_country_codes"):
        views = views.exclude(country_id__in=cell.body["exclude_country_codes"])
    if cell.body.get("author_username"):
        views = views.filter(blog__author__username=cell.body["author_username"])
    kind = cell.endpoint.rsplit("/", 1)[-1]
    if kind == "country":
        by_country = views.values("country_id").annotate(
            n=Count("id"), blogs=Count("blog_id", distinct=True)
        )
        return list(by_country.values_list("country_id", "n", "blogs"))
    if kind == "user":
        by_author = views.values("blog__author__username").annotate(
            n=Count("id"), blogs=Count("blog_id", distinct=True)
        )
        return list(by_author.values_list("blog__author__username", "n", "blogs"))
    if kind == "blog":
        by_blog = views.values("blog_id", "blog__title", "blog__author__username").annotate(
            n=Count("id")
        )
        return list(by_blog.values_list("blog_id", "blog__title", "blog__author__username", "n"))
    if granularity is None:
        raise ValueError("performance needs the answer's granularity")
    buckets = views.annotate(bucket=Trunc("viewed_at", granularity, tzinfo=UTC))
    return list(buckets.values("bucket").annotate(n=Count("id")).values_list("bucket", "n"))


def _label(bucket: Any, granularity: str) -> str:
    day = bucket.date() if hasattr(bucket, "date") else bucket
    if granularity == "day":
        return str(day.isoformat())
    if granularity == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if granularity == "month":
        return f"{day.year}-{day.month:02d}"
    return str(day.year)


def raw_scan_differences(cell: Cell, answer: dict[str, Any], rows: list[tuple[Any, ...]]) -> str:
    """What differs between the API's ``answer`` to ``cell`` and its raw-scan ``rows`` (the
    answer's page and total against the sorted groups); empty when they agree."""
    results, meta = answer["results"], answer["meta"]
    kind = cell.endpoint.rsplit("/", 1)[-1]
    if kind == "performance":
        granularity = meta["granularity"]
        got = {row["label"]: row["views"] for row in results if row["views"]}
        expected = {_label(bucket, granularity): views for bucket, views in rows if views}
        return "" if got == expected else f"views per {granularity}: {got} != {expected}"
    limit = meta["filters"].get("limit") or len(rows)
    if kind == "blog":
        ordered = sorted(rows, key=lambda row: (-row[3], row[0]))[:limit]
        expected_page = [
            {"blog_id": blog, "title": title, "username": username, "views": views}
            for blog, title, username, views in ordered
        ]
    else:
        key = "country_code" if kind == "country" else "username"
        ordered = sorted(rows, key=lambda row: (-row[1], row[0]))[:limit]
        expected_page = [{key: k, "blogs": blogs, "views": views} for k, views, blogs in ordered]
        results = [{key: row[key], "blogs": row["blogs"], "views": row["views"]} for row in results]
    if meta["total"] != len(rows):
        return f"total {meta['total']} != {len(rows)} groups"
    if len(results) != len(expected_page):
        return f"{len(results)} rows != {len(expected_page)}"
    for got, expected in zip(results, expected_page, strict=True):
        if got != expected:
            return f"{got} != {expected}"
    return ""
