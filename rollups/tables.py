"""The summary tables: their names and key columns, the watermark row's name, and the
presence bits' format. Shared by the write side (absorb, rebuild) and the read side."""

from datetime import date

from ingest.models import BlogView
from rollups.models import (
    DailyBlogCountryViews,
    DailyBlogViews,
    DailyCountryViews,
    DailyViews,
    MonthlyBlogCountryViews,
    MonthlyBlogViews,
    MonthlyCountryViews,
    YearlyCountryBlogs,
    YearlyPresence,
)

STATE_NAME = "views"

RAW = BlogView._meta.db_table
DAILY_BLOG_COUNTRY = DailyBlogCountryViews._meta.db_table
DAILY_BLOG = DailyBlogViews._meta.db_table
DAILY_COUNTRY = DailyCountryViews._meta.db_table
DAILY = DailyViews._meta.db_table
MONTHLY_BLOG_COUNTRY = MonthlyBlogCountryViews._meta.db_table
MONTHLY_BLOG = MonthlyBlogViews._meta.db_table
MONTHLY_COUNTRY = MonthlyCountryViews._meta.db_table
PRESENCE = YearlyPresence._meta.db_table
COUNTRY_BLOGS = YearlyCountryBlogs._meta.db_table
NO_DAYS = "0" * 366

# (table, key columns) of the summaries derived from daily (day, blog, country) counts.
DAILY_SUMMARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (DAILY_BLOG_COUNTRY, ("day", "blog_id", "country_id")),
    (DAILY_BLOG, ("day", "blog_id")),
    (DAILY_COUNTRY, ("day", "country_id")),
    (DAILY, ("day",)),
)
MONTHLY_SUMMARIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (MONTHLY_BLOG_COUNTRY, ("blog_id", "country_id")),
    (MONTHLY_BLOG, ("blog_id",)),
    (MONTHLY_COUNTRY, ("country_id",)),
)
SUMMARY_TABLES = (
    *(t for t, _ in DAILY_SUMMARIES),
    *(t for t, _ in MONTHLY_SUMMARIES),
    PRESENCE,
    COUNTRY_BLOGS,
)


def year_masks(start: date, end: date) -> dict[int, str]:
    """For each year ``start..end`` touches: a 366-bit mask of its days inside the range."""
    masks = {}
    for year in range(start.year, end.year + 1):
        first = max(start, date(year, 1, 1))
        last = min(end, date(year, 12, 31))
        low = first.timetuple().tm_yday - 1
        high = last.timetuple().tm_yday - 1
        masks[year] = "0" * low + "1" * (high - low + 1) + "0" * (365 - high)
    return masks
