"""The read side: every analytics answer, exact at its ``as_of``.

A selector is a spec in and rows out: the planner (``api.planner``) owns every query; what is
here is the answer's form (paging, ``meta``, the series' buckets and growth).
"""

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from api.planner import (
    Facts,
    Groups,
    Snapshot,
    author_groups,
    blog_groups,
    blogs_created,
    country_groups,
    facts_for,
    read_snapshot,
    views_per_day,
)
from api.spec import Spec
from core.exceptions import ApplicationError
from core.sql import month_start, next_month

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


def _answer(
    spec: Spec,
    shape: Callable[[Facts], Groups],
    unknown_author: Callable[[Snapshot], Groups] = lambda _: Groups([], 0),
) -> Answer:
    """``shape``'s rows for ``spec``, in one snapshot; an unknown author's are empty."""
    with read_snapshot() as snapshot:
        facts = facts_for(spec, snapshot)
        groups = unknown_author(snapshot) if facts is None else shape(facts)
    return Answer(
        groups.rows,
        {
            "filters": spec.normalized(),
            "total": groups.total,
            "as_of": snapshot.as_of.isoformat().replace("+00:00", "Z"),
            **groups.meta,
        },
        snapshot.rebuild_version,
    )


def _page(spec: Spec) -> tuple[int, int]:
    """``(limit, offset)`` of a paged answer; without a limit, every group (``LIMIT`` takes
    no NULL on SQLite, and this many rows means no limit on either database)."""
    return (sys.maxsize if spec.limit is None else spec.limit), spec.offset or 0


def country_breakdown(*, spec: Spec) -> Answer:
    """Views and distinct viewed blogs per country, most viewed first: a page of them (the
    breakdown) or the ``limit`` first (the top list)."""
    return _answer(spec, lambda facts: country_groups(facts, *_page(spec)))


def author_breakdown(*, spec: Spec) -> Answer:
    """Views and distinct viewed blogs per author, most viewed first: a page of them (the
    breakdown) or the ``limit`` first (the top list)."""
    return _answer(spec, lambda facts: author_groups(facts, *_page(spec)))


def top_blogs(*, spec: Spec) -> Answer:
    """The ``limit`` most viewed blogs; ties by blog id."""
    return _answer(spec, lambda facts: blog_groups(facts, _page(spec)[0]))


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


def _no_series(spec: Spec, start: date | None, end: date) -> Groups:
    """The empty series: its granularity is the range's when it has one."""
    period = _period(spec, start, end) if start and start <= end else spec.compare_period
    return Groups([], 0, _series_meta(spec, period))


def _series_meta(spec: Spec, period: str | None) -> dict[str, Any]:
    return {"granularity": period, "granularity_auto": spec.compare_period is None}


def _today(snapshot: Snapshot) -> date:
    return snapshot.as_of.astimezone(UTC).date()


def views_performance(*, spec: Spec) -> Answer:
    """Views and blogs created per calendar bucket, with growth against the previous bucket.

    The range is the filter's; an open start is the day of the earliest matching view (none:
    no rows), an open end is today (UTC).
    """

    def series(facts: Facts) -> Groups:
        end = spec.last_day or _today(facts.snapshot)
        start = spec.first_day or facts.first_day()
        if start is None or start > end:
            return _no_series(spec, start, end)
        period = _period(spec, start, end)
        buckets = _bucket_count(start, end, period)
        if buckets > MAX_BUCKETS:
            raise ApplicationError(
                f"{buckets:,} {period} buckets is more than {MAX_BUCKETS:,}; ask for a coarser "
                "compare_period or a shorter range.",
                details=[{"field": "compare_period", "reason": f"{buckets} buckets"}],
            )
        per_day = views_per_day(facts, start, end, monthly=period in ("month", "year"))
        rows = _buckets(start, end, period, per_day, blogs_created(facts, start, end))
        return Groups(rows, len(rows), _series_meta(spec, period))

    return _answer(
        spec,
        series,
        unknown_author=lambda snapshot: _no_series(
            spec, spec.first_day, spec.last_day or _today(snapshot)
        ),
    )


def _buckets(
    start: date,
    end: date,
    period: str,
    per_day: list[tuple[date, int]],
    created: dict[date, int],
) -> list[dict[str, Any]]:
    """Every bucket of ``start..end``: views, blogs created and growth against the previous."""
    views_by_bucket: dict[date, int] = {}
    for day, views in per_day:
        bucket = _bucket_start(max(day, start), period)
        views_by_bucket[bucket] = views_by_bucket.get(bucket, 0) + views
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
    return results
