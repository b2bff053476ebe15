"""The read matrix: every analytics endpoint x a range x a filter, the cells that the read
benchmarks (the matrix at rest, the tail-cost curve, reads during sustained ingest) time.

A cell is one POST body for one endpoint. Ranges and filters are the ones issue #11 names:

- ranges: all time, a year (the busiest one), Feb-May of that year, the last 90 days, the last
  30 days (both ending today);
- filters: none, 3 countries, excluding US, one author (the one with the most views, all time),
  that author and 2 countries.
"""

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
