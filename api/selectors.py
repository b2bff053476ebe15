"""The read side: every analytics answer, exact at its ``as_of``, through the shared planner."""

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection

from api.planner import BLOG, USER, Facts, Snapshot, as_date, read_snapshot
from api.spec import Spec
from core.exceptions import ApplicationError
from core.models import Blog, Country
from core.sql import month_start, next_month

COUNTRY = Country._meta.db_table
USERNAME = get_user_model().USERNAME_FIELD
MAX_BUCKETS = 1000
# Automatic granularity: ranges of at most this many days get this period.
AUTO_PERIODS = ((31, "day"), (180, "week"))


@dataclass
class Answer:
    """Result rows plus ``meta`` (filters, total, as_of and what the endpoint adds), and the
    rebuild version of the snapshot they were computed in."""

    results: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    version: int = 0

    def body(self) -> dict[str, Any]:
        return {"results": self.results, "meta": self.meta}


def _meta(spec: Spec, snapshot: Snapshot, total: int, **more: Any) -> dict[str, Any]:
    return {
        "filters": spec.normalized(),
        "total": total,
        "as_of": snapshot.as_of.isoformat().replace("+00:00", "Z"),
        **more,
    }


NO_SUCH_AUTHOR = -1


def _author_id(spec: Spec) -> int | None:
    """The filtered author's id; ``None`` without an author filter; ``NO_SUCH_AUTHOR``."""
    if spec.author_username is None:
        return None
    found = (
        get_user_model()
        ._default_manager.filter(**{USERNAME: spec.author_username})
        .values_list("pk", flat=True)
        .first()
    )
    return NO_SUCH_AUTHOR if found is None else int(found)


def _fetch(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _page(spec: Spec) -> tuple[int, int]:
    """``(limit, offset)`` of a paged answer; without a limit, every group (``LIMIT`` takes
    no NULL on SQLite, and this many rows means no limit on either database)."""
    return (sys.maxsize if spec.limit is None else spec.limit), spec.offset or 0


def _binary(column: str) -> str:
    """``column`` compared by code point, as API.md orders ties (PostgreSQL's default collation
    would put "ana" before "Zed"; SQLite compares code points already)."""
    return f'{column} COLLATE "C"' if connection.vendor == "postgresql" else column


# --- Grouped by country / by author --------------------------------------------------------------


@dataclass
class Groups:
    """One page of groups, and how many groups there are in all."""

    rows: list[dict[str, Any]]
    total: int


def _country_rows(facts: Facts, limit: int, offset: int) -> Groups:
    # Views from the smallest level with countries (at most 250 groups: these are fetched and
    # paged here); then distinct blogs, for the page's countries only, from the yearly presence
    # bits on PostgreSQL, else from the (day|month, blog, country) rows.
    sql, params = facts.sql(countries=True)
    views = _fetch(
        f"SELECT f.country_id, c.name, sum(f.views) AS views FROM ({sql}) f "
        f"JOIN {COUNTRY} c ON c.code = f.country_id GROUP BY f.country_id, c.name "
        f"ORDER BY views DESC, {_binary('f.country_id')}",
        params,
    )
    page = views[offset : offset + limit]
    if not page:
        return Groups([], len(views))
    if len(page) < len(views):
        # Counting distinct blogs is the costly part: only for the countries shown.
        shown = replace(
            facts.spec,
            country_codes=tuple(sorted(code for code, _, _ in page)),
            exclude_country_codes=None,
        )
        facts = Facts(shown, facts.snapshot, author_id=facts.author_id)
    if connection.vendor == "postgresql":
        counts, params = facts.presence_blogs()
    else:
        pairs, params = facts.sql(blogs=True, countries=True)
        counts = f"SELECT country_id, count(DISTINCT blog_id) FROM ({pairs}) p GROUP BY country_id"
    blogs = dict(_fetch(counts, params))
    rows = [
        {
            "country_code": code,
            "country_name": name,
            "blogs": int(blogs.get(code, 0)),
            "views": int(count),
        }
        for code, name, count in page
    ]
    return Groups(rows, len(views))


def _author_rows(facts: Facts, limit: int, offset: int) -> Groups:
    sql, params = facts.sql(blogs=True)
    username = f"u.{USERNAME}"
    # Per blog first: a blog counts when its (possibly net, see Facts.sql) views are positive.
    # Only the page's rows leave the database; the count of all groups comes with them (also
    # when the page is empty: the LEFT JOIN keeps the total's row).
    rows = _fetch(
        f"WITH authors AS ("
        f"SELECT {username} AS username, count(*) AS blogs, sum(t.views) AS views FROM ("
        f"SELECT f.blog_id, sum(f.views) AS views FROM ({sql}) f GROUP BY f.blog_id "
        f"HAVING sum(f.views) > 0) t "
        f"JOIN {BLOG} b ON b.id = t.blog_id JOIN {USER} u ON u.id = b.author_id "
        f"GROUP BY u.id, {username}) "
        f"SELECT total.n, page.username, page.blogs, page.views "
        f"FROM (SELECT count(*) AS n FROM authors) total LEFT JOIN ("
        f"SELECT username, blogs, views FROM authors "
        f"ORDER BY views DESC, {_binary('username')} LIMIT %s OFFSET %s) page ON true "
        f"ORDER BY page.views DESC, {_binary('page.username')}",
        [*params, limit, offset],
    )
    found = [
        {"username": name, "blogs": int(blogs), "views": int(views)}
        for _, name, blogs, views in rows
        if name is not None
    ]
    return Groups(found, int(rows[0][0]))


def _grouped(spec: Spec, rows_of: Callable[[Facts, int, int], Groups]) -> Answer:
    limit, offset = _page(spec)
    with read_snapshot() as snapshot:
        author = _author_id(spec)
        groups = (
            Groups([], 0)
            if author == NO_SUCH_AUTHOR
            else rows_of(Facts(spec, snapshot, author_id=author), limit, offset)
        )
    return Answer(groups.rows, _meta(spec, snapshot, groups.total), snapshot.rebuild_version)


def country_breakdown(*, spec: Spec) -> Answer:
    """Views and distinct viewed blogs per country, most viewed first (paged)."""
    return _grouped(spec, _country_rows)


def author_breakdown(*, spec: Spec) -> Answer:
    """Views and distinct viewed blogs per author, most viewed first (paged)."""
    return _grouped(spec, _author_rows)


def top_countries(*, spec: Spec) -> Answer:
    """The ``limit`` most viewed countries."""
    return _grouped(spec, _country_rows)


def top_authors(*, spec: Spec) -> Answer:
    """The ``limit`` most viewed authors."""
    return _grouped(spec, _author_rows)


def top_blogs(*, spec: Spec) -> Answer:
    """The ``limit`` most viewed blogs; ties by blog id."""
    with read_snapshot() as snapshot:
        author = _author_id(spec)
        if author == NO_SUCH_AUTHOR:
            return Answer([], _meta(spec, snapshot, 0), snapshot.rebuild_version)
        sql, params = Facts(spec, snapshot, author_id=author).sql(blogs=True)
        rows = _fetch(
            f"SELECT t.blog_id, b.title, u.{USERNAME}, t.views, t.total FROM ("
            f"SELECT f.blog_id, sum(f.views) AS views, count(*) OVER () AS total "
            f"FROM ({sql}) f GROUP BY f.blog_id HAVING sum(f.views) > 0 "
            f"ORDER BY views DESC, f.blog_id LIMIT %s) t "
            f"JOIN {BLOG} b ON b.id = t.blog_id JOIN {USER} u ON u.id = b.author_id "
            f"ORDER BY t.views DESC, t.blog_id",
            [*params, spec.limit],
        )
    results = [
        {"blog_id": blog_id, "title": title, "username": username, "views": int(views)}
        for blog_id, title, username, views, _ in rows
    ]
    total = int(rows[0][4]) if rows else 0
    return Answer(results, _meta(spec, snapshot, total), snapshot.rebuild_version)


# --- Time series ---------------------------------------------------------------------------------


def _bucket_start(day: date, period: str) -> date:
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return month_start(day)
    return date(day.year, 1, 1)


def _next_bucket(start: date, period: str) -> date:
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    if period == "month":
        return next_month(start)
    return date(start.year + 1, 1, 1)


def _label(start: date, period: str) -> str:
    if period == "day":
        return start.isoformat()
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{start.year}-{start.month:02d}"
    return str(start.year)


def _bucket_count(start: date, end: date, period: str) -> int:
    if period == "day":
        return (end - start).days + 1
    if period == "week":
        return (_bucket_start(end, "week") - _bucket_start(start, "week")).days // 7 + 1
    if period == "month":
        return (end.year - start.year) * 12 + end.month - start.month + 1
    return end.year - start.year + 1


def _growth(views: int, previous: int | None) -> float | None:
    if not previous:
        return None
    change = Decimal(views - previous) * 100 / Decimal(previous)
    return float(change.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _blogs_created(author: int | None, start: date, end: date) -> dict[date, int]:
    """Blogs created per day in ``start..end``, by the author if given (countries do not apply)."""
    blogs = Blog.objects.filter(
        created_at__gte=datetime(start.year, start.month, start.day, tzinfo=UTC),
        created_at__lt=datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1),
    )
    if author is not None:
        blogs = blogs.filter(author_id=author)
    counts: dict[date, int] = {}
    for created_at in blogs.values_list("created_at", flat=True):
        day = created_at.astimezone(UTC).date()
        counts[day] = counts.get(day, 0) + 1
    return counts


def _period(spec: Spec, start: date, end: date) -> str:
    if spec.compare_period:
        return spec.compare_period
    days = (end - start).days + 1
    period = next((name for most, name in AUTO_PERIODS if days <= most), "month")
    # An open start reaching back decades (one view dated 1900) must not make the automatic
    # answer a 400: past 1,000 months, years (at most 201 in the date range).
    if period == "month" and _bucket_count(start, end, period) > MAX_BUCKETS:
        return "year"
    return period


def views_performance(*, spec: Spec) -> Answer:
    """Views and blogs created per calendar bucket, with growth against the previous bucket.

    The range is the filter's; an open start is the day of the earliest matching view (none:
    no rows), an open end is today (UTC).
    """
    with read_snapshot() as snapshot:
        author = _author_id(spec)
        facts = Facts(spec, snapshot, author_id=author)
        end = spec.last_day or snapshot.as_of.astimezone(UTC).date()
        start = spec.first_day
        if start is None and author != NO_SUCH_AUTHOR:
            start = facts.first_day()
        if start is None or author == NO_SUCH_AUTHOR or start > end:
            period = _period(spec, start, end) if start and start <= end else spec.compare_period
            return Answer(
                [],
                _meta(
                    spec,
                    snapshot,
                    0,
                    granularity=period,
                    granularity_auto=spec.compare_period is None,
                ),
                snapshot.rebuild_version,
            )
        period = _period(spec, start, end)
        buckets = _bucket_count(start, end, period)
        if buckets > MAX_BUCKETS:
            raise ApplicationError(
                f"{buckets:,} {period} buckets is more than {MAX_BUCKETS:,}; ask for a coarser "
                "compare_period or a shorter range.",
                details=[{"field": "compare_period", "reason": f"{buckets} buckets"}],
            )
        sql, params = facts.sql(monthly=period in ("month", "year"), start=start, end=end)
        per_day = _fetch(f"SELECT day, sum(views) FROM ({sql}) f GROUP BY day", params)
        created = _blogs_created(author, start, end)

    views_by_bucket: dict[date, int] = {}
    for day, views in per_day:
        bucket = _bucket_start(max(as_date(day), start), period)
        views_by_bucket[bucket] = views_by_bucket.get(bucket, 0) + int(views)
    created_by_bucket: dict[date, int] = {}
    for day, count in created.items():
        bucket = _bucket_start(day, period)
        created_by_bucket[bucket] = created_by_bucket.get(bucket, 0) + count

    results = []
    previous: int | None = None
    bucket = _bucket_start(start, period)
    while bucket <= end:
        following = _next_bucket(bucket, period)
        views = views_by_bucket.get(bucket, 0)
        results.append(
            {
                "period_start": max(bucket, start).isoformat(),
                "period_end": min(following - timedelta(days=1), end).isoformat(),
                "label": _label(bucket, period),
                "blogs_created": created_by_bucket.get(bucket, 0),
                "views": views,
                "growth_pct": None if previous is None else _growth(views, previous),
            }
        )
        previous = views
        bucket = following
    return Answer(
        results,
        _meta(
            spec,
            snapshot,
            len(results),
            granularity=period,
            granularity_auto=spec.compare_period is None,
        ),
        snapshot.rebuild_version,
    )
