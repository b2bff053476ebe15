"""A straightforward recount of every analytics answer from the raw views, written from API.md
without the planner, the summaries or SQL: the test oracle."""

from collections import defaultdict
from datetime import UTC, date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.contrib.auth import get_user_model

from core.models import Blog, Country
from ingest.models import BlogView


class Rejected(Exception):
    """The contract says this request is a 400."""


def _matching(body: dict[str, Any]) -> tuple[list[tuple[int, str, date]], dict[int, Any]]:
    blogs = {blog.pk: blog for blog in Blog.objects.select_related("author").all()}
    start, end = _range(body)
    include = {c.upper() for c in body["country_codes"]} if body.get("country_codes") else None
    exclude = {c.upper() for c in body.get("exclude_country_codes") or []}
    author = body.get("author_username")
    rows = []
    for blog_id, country, viewed_at in BlogView.objects.values_list(
        "blog_id", "country_id", "viewed_at"
    ):
        day = viewed_at.astimezone(UTC).date()
        if (start and day < start) or (end and day > end):
            continue
        if (include is not None and country not in include) or country in exclude:
            continue
        if author is not None and blogs[blog_id].author.username != author:
            continue
        rows.append((blog_id, country, day))
    return rows, blogs


def _range(body: dict[str, Any]) -> tuple[date | None, date | None]:
    if body.get("year"):
        return date(body["year"], 1, 1), date(body["year"], 12, 31)
    start = date.fromisoformat(body["start_date"]) if body.get("start_date") else None
    end = date.fromisoformat(body["end_date"]) if body.get("end_date") else None
    return start, end


def _groups(rows: list[tuple[int, str, date]], key: Any) -> dict[Any, tuple[int, int]]:
    views: dict[Any, int] = defaultdict(int)
    blogs: dict[Any, set[int]] = defaultdict(set)
    for blog_id, country, _day in rows:
        group = key(blog_id, country)
        views[group] += 1
        blogs[group].add(blog_id)
    return {group: (len(blogs[group]), views[group]) for group in views}


def by_country(body: dict[str, Any]) -> list[dict[str, Any]]:
    rows, _ = _matching(body)
    names = dict(Country.objects.values_list("code", "name"))
    found = [
        {"country_code": code, "country_name": names[code], "blogs": b, "views": v}
        for code, (b, v) in _groups(rows, lambda blog, country: country).items()
    ]
    return sorted(found, key=lambda r: (-r["views"], r["country_code"]))


def by_author(body: dict[str, Any]) -> list[dict[str, Any]]:
    rows, blogs = _matching(body)
    found = [
        {"username": name, "blogs": b, "views": v}
        for name, (b, v) in _groups(rows, lambda blog, c: blogs[blog].author.username).items()
    ]
    return sorted(found, key=lambda r: (-r["views"], r["username"]))


def top_blogs(body: dict[str, Any]) -> list[dict[str, Any]]:
    rows, blogs = _matching(body)
    found = [
        {
            "blog_id": blog,
            "title": blogs[blog].title,
            "username": blogs[blog].author.username,
            "views": v,
        }
        for blog, (_, v) in _groups(rows, lambda blog, c: blog).items()
    ]
    return sorted(found, key=lambda r: (-r["views"], r["blog_id"]))


def _bucket(day: date, period: str) -> date:
    return {
        "day": day,
        "week": day - timedelta(days=day.weekday()),
        "month": day.replace(day=1),
        "year": date(day.year, 1, 1),
    }[period]


def performance(body: dict[str, Any], *, today: date) -> list[dict[str, Any]]:
    rows, blogs = _matching(body)
    start, end = _range(body)
    end = end or today
    if (
        body.get("author_username")
        and not get_user_model().objects.filter(username=body["author_username"]).exists()
    ):
        return []
    if start is None:
        days = [day for _, _, day in rows if day <= end]
        if not days:
            return []
        start = min(days)
    if start > end:
        return []
    period = body.get("compare_period") or (
        "day" if (end - start).days < 31 else "week" if (end - start).days < 180 else "month"
    )
    months = (end.year - start.year) * 12 + end.month - start.month + 1
    if not body.get("compare_period") and period == "month" and months > 1000:
        period = "year"
    # Every bucket, one day at a time: slow and obviously right.
    buckets: dict[date, dict[str, Any]] = {}
    day = start
    while day <= end:
        bucket = buckets.setdefault(
            _bucket(day, period), {"period_start": day, "views": 0, "blogs_created": 0}
        )
        bucket["period_end"] = day
        day += timedelta(days=1)
    if len(buckets) > 1000:
        raise Rejected
    for _, _, day in rows:
        if start <= day <= end:
            buckets[_bucket(day, period)]["views"] += 1
    author = body.get("author_username")
    for blog in blogs.values():
        created = blog.created_at.astimezone(UTC).date()
        if start <= created <= end and (author is None or blog.author.username == author):
            buckets[_bucket(created, period)]["blogs_created"] += 1
    results = []
    previous = None
    for key in sorted(buckets):
        bucket = buckets[key]
        if period == "week":
            iso = key.isocalendar()
            label = f"{iso[0]}-W{iso[1]:02d}"
        else:
            label = {"day": key.isoformat(), "month": key.isoformat()[:7], "year": str(key.year)}[
                period
            ]
        growth = None
        if previous:
            growth = float(
                (Decimal(bucket["views"] - previous) * 100 / previous).quantize(
                    Decimal("0.01"), rounding=ROUND_HALF_UP
                )
            )
        results.append(
            {
                "period_start": bucket["period_start"].isoformat(),
                "period_end": bucket["period_end"].isoformat(),
                "label": label,
                "blogs_created": bucket["blogs_created"],
                "views": bucket["views"],
                "growth_pct": growth,
            }
        )
        previous = bucket["views"]
    return results


# --- compare -------------------------------------------------------------------------------------


def _year_earlier(day: date) -> date:
    if (day.month, day.day) == (2, 29):
        return date(day.year - 1, 2, 28)
    return day.replace(year=day.year - 1)


def comparison(body: dict[str, Any], *, today: date) -> tuple[dict[str, Any], Any]:
    """``body`` with its range resolved (an open end is today), and the function mapping a day
    of it to the day it compares with; ``Rejected`` where the contract says 400."""
    start, end = _range(body)
    end = end or today
    if start is None or start > end:
        raise Rejected
    if body["compare"] == "previous_period":
        length = (end - start).days + 1

        def earlier(day: date) -> date:
            return day - timedelta(days=length)
    else:
        earlier = _year_earlier
    if earlier(start) < date(1900, 1, 1):
        raise Rejected
    resolved = {k: v for k, v in body.items() if k not in ("year", "compare")}
    resolved |= {"start_date": start.isoformat(), "end_date": end.isoformat()}
    return resolved, earlier


def _change(views: int, before: int) -> float | None:
    if not before:
        return None
    return float(
        (Decimal(views - before) * 100 / before).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    )


def compared(
    rows: list[dict[str, Any]], key: str, body: dict[str, Any], earlier: Any, count: Any
) -> list[dict[str, Any]]:
    """``rows`` (the resolved range's) with ``previous_views`` and ``change_pct``: ``count``
    (by_country, by_author or top_blogs) over the days that ``earlier`` maps the range to."""
    start, end = _range(body)
    assert start and end
    previous_body = {**body, "start_date": earlier(start).isoformat()}
    previous_body["end_date"] = earlier(end).isoformat()
    before = {row[key]: row["views"] for row in count(previous_body)}
    return [
        {**row, "previous_views": before.get(row[key], 0)}
        | {"change_pct": _change(row["views"], before.get(row[key], 0))}
        for row in rows
    ]


def performance_compared(
    body: dict[str, Any], *, today: date, earlier: Any
) -> list[dict[str, Any]]:
    """The series of the resolved ``body``, each row with the views of its own days mapped by
    ``earlier``, counted one view at a time."""
    rows = performance(body, today=today)
    everything, _ = _matching(
        {k: v for k, v in body.items() if k not in ("start_date", "end_date")}
    )
    results = []
    for row in rows:
        low = earlier(date.fromisoformat(row["period_start"]))
        high = earlier(date.fromisoformat(row["period_end"]))
        before = sum(1 for _, _, day in everything if low <= day <= high)
        results.append(
            {**row, "previous_views": before, "change_pct": _change(row["views"], before)}
        )
    return results
