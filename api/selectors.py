"""The read side: every analytics answer, exact at its ``as_of``.

A selector is a spec in and rows out: the planner (``api.planner``) owns every query; what is
here is the answer's form (paging, ``meta``, the series' buckets and growth).
"""

import sys
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from api.planner import (
    Facts,
    Groups,
    Recent,
    Snapshot,
    author_groups,
    author_views,
    blog_groups,
    blog_views,
    blogs_created,
    country_groups,
    country_views,
    facts_for,
    read_snapshot,
    recent_views,
    views_per_day,
)
from api.spec import Spec
from core.dates import FIRST_DAY, RANGE_TEXT
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


# --- Comparison with an earlier range ----------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """The range an answer covers (open ends resolved) and the earlier one it is compared with."""

    kind: str
    start: date
    end: date

    def earlier(self, day: date) -> date:
        """The day of the comparison range that ``day`` (of the answer's range) compares with."""
        if self.kind == "previous_period":
            return day - timedelta(days=(self.end - self.start).days + 1)
        # The same date a year earlier; there is no Feb 29 then, so Feb 28.
        return date(day.year - 1, day.month, min(day.day, 28) if day.month == 2 else day.day)

    @property
    def previous_start(self) -> date:
        return self.earlier(self.start)

    @property
    def previous_end(self) -> date:
        return self.earlier(self.end)

    def meta(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start_date": self.previous_start.isoformat(),
            "end_date": self.previous_end.isoformat(),
            "current_start_date": self.start.isoformat(),
            "current_end_date": self.end.isoformat(),
        }


def _compare_error(reason: str) -> ApplicationError:
    return ApplicationError(
        f"Invalid filters: compare ({reason}).", details=[{"field": "compare", "reason": reason}]
    )


def _comparison(spec: Spec, today: date) -> Comparison | None:
    """The comparison ``spec`` asks for, its open end resolved to ``today``; 400 when it has no
    start, a start after that end, or a comparison range reaching before the first day."""
    if spec.compare is None:
        return None
    start, end = spec.first_day, spec.last_day or today
    if start is None:
        raise _compare_error("compare needs a start: give year or start_date")
    if start > end:
        raise _compare_error(f"compare needs a range that has started: {start} is after today")
    comparison = Comparison(spec.compare, start, end)
    if comparison.previous_start < FIRST_DAY:
        raise _compare_error(
            f"the comparison range {comparison.previous_start}..{comparison.previous_end} "
            f"is outside {RANGE_TEXT}"
        )
    return comparison


def _compared(rows: list[dict[str, Any]], key: str, previous: dict[Any, int]) -> None:
    """Give each row its ``previous_views`` and ``change_pct`` (rows of the earlier range that
    the answer does not list are not added)."""
    for row in rows:
        before = previous.get(row[key], 0)
        row["previous_views"] = before
        row["change_pct"] = _growth(row["views"], before)


Shape = Callable[[Facts, Comparison | None], Groups]


def _answer(
    spec: Spec,
    shape: Shape,
    unknown_author: Callable[[Snapshot], Groups] = lambda _: Groups([], 0),
) -> Answer:
    """``shape``'s rows for ``spec``, in one snapshot; an unknown author's are empty.

    With ``compare``, the range is resolved first (an open end is today) and the answer is that
    range's; the shape adds the earlier range's views from the same snapshot.
    """
    with read_snapshot() as snapshot:
        comparison = _comparison(spec, snapshot.today)
        asked = spec
        if comparison is not None:
            asked = replace(spec, year=None, start_date=comparison.start, end_date=comparison.end)
        facts = facts_for(asked, snapshot)
        groups = unknown_author(snapshot) if facts is None else shape(facts, comparison)
    return Answer(
        groups.rows,
        {
            "filters": spec.normalized(),
            "total": groups.total,
            "as_of": snapshot.as_of.isoformat().replace("+00:00", "Z"),
            "compare": None if comparison is None else comparison.meta(),
            **groups.meta,
        },
        snapshot.rebuild_version,
    )


def _with_previous(
    groups: Callable[[Facts], Groups],
    key: str,
    previous: Callable[[Facts, list[Any], date, date], dict[Any, int]],
) -> Shape:
    """A grouped shape whose rows, with a comparison, gain the earlier range's views (one more
    query, for the listed keys only)."""

    def shape(facts: Facts, comparison: Comparison | None) -> Groups:
        found = groups(facts)
        if comparison is not None:
            keys = [row[key] for row in found.rows]
            views = previous(facts, keys, comparison.previous_start, comparison.previous_end)
            _compared(found.rows, key, views)
        return found

    return shape


def _page(spec: Spec) -> tuple[int, int]:
    """``(limit, offset)`` of a paged answer; without a limit, every group (``LIMIT`` takes
    no NULL on SQLite, and this many rows means no limit on either database)."""
    return (sys.maxsize if spec.limit is None else spec.limit), spec.offset or 0


def country_breakdown(*, spec: Spec) -> Answer:
    """Views and distinct viewed blogs per country, most viewed first: a page of them (the
    breakdown) or the ``limit`` first (the top list)."""
    return _answer(
        spec,
        _with_previous(
            lambda facts: country_groups(facts, *_page(spec)), "country_code", country_views
        ),
    )


def author_breakdown(*, spec: Spec) -> Answer:
    """Views and distinct viewed blogs per author, most viewed first: a page of them (the
    breakdown) or the ``limit`` first (the top list)."""
    return _answer(
        spec,
        _with_previous(lambda facts: author_groups(facts, *_page(spec)), "username", author_views),
    )


def top_blogs(*, spec: Spec) -> Answer:
    """The ``limit`` most viewed blogs; ties by blog id."""
    return _answer(
        spec,
        _with_previous(lambda facts: blog_groups(facts, _page(spec)[0]), "blog_id", blog_views),
    )


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


def views_performance(*, spec: Spec) -> Answer:
    """Views and blogs created per calendar bucket, with growth against the previous bucket.

    The range is the filter's; an open start is the day of the earliest matching view (none:
    no rows), an open end is today (UTC).
    """

    def series(facts: Facts, comparison: Comparison | None) -> Groups:
        end = spec.last_day or facts.snapshot.today
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
        if comparison is not None:
            _series_compared(facts, comparison, period, rows)
        return Groups(rows, len(rows), _series_meta(spec, period))

    return _answer(
        spec,
        series,
        unknown_author=lambda snapshot: _no_series(
            spec, spec.first_day, spec.last_day or snapshot.today
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


def _series_compared(
    facts: Facts, comparison: Comparison, period: str, rows: list[dict[str, Any]]
) -> None:
    """Each bucket's ``previous_views`` (the views of its own days mapped into the comparison
    range) and ``change_pct``, from one more read of the comparison range."""
    # Days, not months: a February of a common year maps onto Feb 1-28 of a leap year, so a
    # leap year's monthly row would add its Feb 29.
    per_day = sorted(
        views_per_day(facts, comparison.previous_start, comparison.previous_end, monthly=False)
    )
    days = [day for day, _ in per_day]
    running = [0]
    for _, views in per_day:
        running.append(running[-1] + views)
    for row in rows:
        low = comparison.earlier(date.fromisoformat(row["period_start"]))
        high = comparison.earlier(date.fromisoformat(row["period_end"]))
        before = running[bisect_right(days, high)] - running[bisect_left(days, low)]
        row["previous_views"] = before
        row["change_pct"] = _growth(row["views"], before)


# --- Realtime ------------------------------------------------------------------------------------

REALTIME_MINUTES = 30
REALTIME_SHORT_MINUTES = 5


def _instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def views_realtime(*, spec: Spec) -> dict[str, Any]:
    """The views of the last 30 minutes, per UTC minute (the current one included, so far),
    with the last 5 and 30 minutes' totals and the window's most viewed blogs and countries.

    Exact at ``as_of``: every view committed before it whose ``viewed_at`` lies in the window,
    absorbed or not, also one that arrived late. Views dated after the current minute (ingest
    takes up to 5 minutes ahead) count once their minute has come.
    """
    with read_snapshot() as snapshot:
        current = snapshot.as_of.astimezone(UTC).replace(second=0, microsecond=0)
        start = current - timedelta(minutes=REALTIME_MINUTES - 1)
        end = current + timedelta(minutes=1)
        facts = facts_for(spec, snapshot)
        assert spec.limit is not None
        recent = (
            Recent({}, [], []) if facts is None else recent_views(facts, start, end, spec.limit)
        )
    minutes = [start + timedelta(minutes=n) for n in range(REALTIME_MINUTES)]
    per_minute = [
        {"minute": _instant(minute), "views": recent.per_minute.get(f"{minute:%Y-%m-%d %H:%M}", 0)}
        for minute in minutes
    ]
    return {
        "results": {
            "views_last_5_minutes": sum(
                row["views"] for row in per_minute[-REALTIME_SHORT_MINUTES:]
            ),
            "views_last_30_minutes": sum(row["views"] for row in per_minute),
            "per_minute": per_minute,
            "top_blogs": recent.top_blogs,
            "top_countries": recent.top_countries,
        },
        "meta": {
            "filters": spec.normalized(),
            "as_of": _instant(snapshot.as_of),
            "window_start": _instant(start),
            "window_end": _instant(end),
        },
    }
