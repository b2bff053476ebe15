"""The registry of summary tables: every summary level declared once, shared by both sides.

A *level* counts the raw views per ``(day, *columns)`` in its daily table and, for all but the
smallest, per ``(month, *columns)`` in its monthly one. Absorb and rebuild write every level of
``LEVELS``; the planner reads the smallest one that holds the columns a question needs
(``level_for``); the tests' recount checks every one. Adding a level is one declaration here
(plus its models and migration).

The *recent* levels (``RECENT_LEVELS``) count the views of the last hour or so per UTC minute
(and per 5 minutes where a level has many rows), for the realtime answer; their own absorb
(``rollups_absorb_recent``, on their own watermark row, beside the summaries') and rebuild
write them, and their absorb drops their rows older than ``RECENT_KEEP``. The *window* rows
(``RECENT_WINDOWS``) sum them per blog, per country and per (blog, country) over whole
realtime windows (``recent_window_ends``), for the answer's rankings.

Beside the levels: the raw table, the yearly presence bits per (year, country, blog) with the
per-(year, country), all-time per-country, per-(country, last day) and per-(year, whole-month
range, country) blog counts kept from them (PostgreSQL only), and the watermark row's name.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from core.sql import SQL
from ingest.models import BlogView
from rollups.models import (
    AllTimeCountryBlogs,
    CountryBlogLastDays,
    DailyBlogCountryViews,
    DailyBlogViews,
    DailyCountryViews,
    DailyViews,
    FiveMinuteBlogViews,
    LastDayCountryBlogs,
    MinuteBlogCountryViews,
    MinuteBlogViews,
    MinuteCountryViews,
    MinuteViews,
    MonthlyBlogCountryViews,
    MonthlyBlogViews,
    MonthlyCountryViews,
    MonthRangeCountryBlogs,
    Summary,
    TrailingBlogCountryViews,
    TrailingBlogViews,
    WindowBlogCountryViews,
    WindowBlogViews,
    WindowCountryViews,
    YearlyBlogCountryViews,
    YearlyCountryBlogs,
    YearlyPresence,
)

# The name of the one AbsorbState row: the watermark, the open day and the rebuild version.
STATE_NAME = "views"
RAW = BlogView._meta.db_table
PRESENCE = YearlyPresence._meta.db_table
COUNTRY_BLOGS = YearlyCountryBlogs._meta.db_table
ALL_TIME_COUNTRY_BLOGS = AllTimeCountryBlogs._meta.db_table
LAST_DAY_COUNTRY_BLOGS = LastDayCountryBlogs._meta.db_table
MONTH_RANGE_COUNTRY_BLOGS = MonthRangeCountryBlogs._meta.db_table
# A presence row's days: 366 bits, bit ``day of year - 1`` set when the day has a view.
NO_DAYS = "0" * 366
# The last day with a view of a presence row (``p``): its year's first day plus the position of
# its last set bit (a row always has one).
LAST_PRESENT_DAY = "make_date(p.year, 1, 1) + (length(rtrim(p.days::text, '0')) - 1)"
# Each (country, blog) pair's last day, by blocks of LAST_DAYS_BLOCK blogs (CountryBlogLastDays).
LAST_DAYS = CountryBlogLastDays._meta.db_table
LAST_DAYS_BLOCK = 256
# A block's days when none of its blogs has a view.
NO_LAST_DAYS = f"array_fill('-infinity'::date, ARRAY[{LAST_DAYS_BLOCK}])"


def last_days_slot(blog: str) -> tuple[str, str]:
    """The block of the blog id column ``blog`` and its slot in the block's array (1-based)."""
    return f"{blog} / {LAST_DAYS_BLOCK}", f"mod({blog}, {LAST_DAYS_BLOCK}) + 1"


def last_days_rows(pairs: SQL, *, over: str | None) -> SQL:
    """``(country_id, block, days)`` rows of ``LAST_DAYS`` with the days of ``pairs``
    (``country_id, blog_id, day``, a pair at most once) in their blogs' slots, and in the other
    slots the days of the table ``over``'s row of the block (absorb: its rows move on) or none
    (a rebuild: ``pairs`` are all of them)."""
    block, slot = last_days_slot("blog_id")
    old = f"coalesce(b.days, {NO_LAST_DAYS})" if over else NO_LAST_DAYS
    joined = (
        f" LEFT JOIN {over} b ON b.country_id = g.country_id AND b.block = g.block" if over else ""
    )
    return SQL(
        f"SELECT g.country_id, g.block, ARRAY(SELECT coalesce(n.day, e.day) "
        f"FROM unnest({old}) WITH ORDINALITY e (day, slot) "
        "LEFT JOIN unnest(g.slots, g.days) n (slot, day) ON n.slot = e.slot ORDER BY e.slot) "
        f"FROM (SELECT country_id, {block} AS block, "
        f"array_agg({slot}) AS slots, array_agg(day) AS days "
        f"FROM ({pairs.text}) pairs GROUP BY 1, 2) g{joined} ORDER BY 1, 2",
        pairs.params,
    )


@dataclass(frozen=True)
class Level:
    """One summary level: its key columns besides the day or month, and its two models.

    ``monthly_folded``: the monthly rows count only the days before
    ``AbsorbState.monthly_open_from`` (absorb folds each day in once it has ended); readers
    take the later days from the daily rows. ``yearly_model``: rows per (year, *columns) of
    the days the monthly rows count (a folded level only), for readers that do not need the
    days or months apart. ``trailing_model``: rows per (span, *columns) of the ``span - 1``
    days before the open day (folded or not), for each of ``TRAILING_SPANS``, for the same
    readers.
    """

    columns: tuple[str, ...]
    daily_model: type[Summary]
    monthly_model: type[Summary] | None = None
    monthly_folded: bool = False
    yearly_model: type[Summary] | None = None
    trailing_model: type[Summary] | None = None

    @property
    def daily(self) -> str:
        return self.daily_model._meta.db_table

    @property
    def monthly(self) -> str | None:
        return None if self.monthly_model is None else self.monthly_model._meta.db_table

    @property
    def yearly(self) -> str | None:
        return None if self.yearly_model is None else self.yearly_model._meta.db_table

    @property
    def trailing(self) -> str | None:
        return None if self.trailing_model is None else self.trailing_model._meta.db_table

    @property
    def daily_keys(self) -> tuple[str, ...]:
        return ("day", *self.columns)

    @property
    def monthly_keys(self) -> tuple[str, ...]:
        return ("month", *self.columns)

    @property
    def yearly_keys(self) -> tuple[str, ...]:
        return ("year", *self.columns)

    @property
    def trailing_keys(self) -> tuple[str, ...]:
        return ("span", *self.columns)

    def answers(self, columns: set[str]) -> bool:
        """Whether the level holds every one of ``columns`` (a question's dimensions and the
        columns its filters test)."""
        return columns <= set(self.columns)


BLOG_COUNTRY_LEVEL = Level(
    ("blog_id", "country_id"),
    DailyBlogCountryViews,
    MonthlyBlogCountryViews,
    monthly_folded=True,
    yearly_model=YearlyBlogCountryViews,
    trailing_model=TrailingBlogCountryViews,
)
BLOG_LEVEL = Level(("blog_id",), DailyBlogViews, MonthlyBlogViews, trailing_model=TrailingBlogViews)
COUNTRY_LEVEL = Level(("country_id",), DailyCountryViews, MonthlyCountryViews)
DAY_LEVEL = Level((), DailyViews)
# The ranges of trailing rows: the last 30 and the last 90 days, today included (the dashboard's
# ranges), for a level's ``trailing_model``.
TRAILING_SPANS = (30, 90)
# Largest first: the order absorb and rebuild write them in (the presence bits are chained to
# the first one's upsert).
LEVELS = (BLOG_COUNTRY_LEVEL, BLOG_LEVEL, COUNTRY_LEVEL, DAY_LEVEL)


@dataclass(frozen=True)
class RecentLevel:
    """One per-minute level: its key columns besides the minute, its per-minute model and,
    where the level has many rows per minute, its per-5-minute one (``block_model``)."""

    columns: tuple[str, ...]
    minute_model: type[Summary]
    block_model: type[Summary] | None = None

    @property
    def minute_table(self) -> str:
        return self.minute_model._meta.db_table

    @property
    def block_table(self) -> str | None:
        return None if self.block_model is None else self.block_model._meta.db_table

    @property
    def keys(self) -> tuple[str, ...]:
        return ("minute", *self.columns)

    @property
    def tables(self) -> tuple[str, ...]:
        return (self.minute_table, *filter(None, [self.block_table]))

    def spans(
        self, start: datetime, end: datetime, *, blocks: bool = True
    ) -> list[tuple[str, datetime, datetime]]:
        """``(table, low, high)`` for the rows of the minutes ``start..end``: the whole 5-minute
        blocks inside it from the block rows (with ``blocks``, where the level has them), the
        edge minutes and the rest from the minute rows; no empty span."""
        spans = [(self.minute_table, start, end)]
        if blocks and self.block_table is not None:
            first, after = _blocks_inside(start, end)
            if first < after:
                spans = [
                    (self.minute_table, start, first),
                    (self.block_table, first, after),
                    (self.minute_table, after, end),
                ]
        return [(table, low, high) for table, low, high in spans if low < high]


# Blog questions without country filters (and an author's minutes) read (minute, blog) rows,
# 5-minute blocks inside the window; minutes and countries without an author, (minute, country)
# rows (the minutes without any filter, the per-minute totals); the rest, (minute, blog,
# country) rows.
RECENT_BLOG_COUNTRY = RecentLevel(("blog_id", "country_id"), MinuteBlogCountryViews)
RECENT_BLOG = RecentLevel(("blog_id",), MinuteBlogViews, FiveMinuteBlogViews)
RECENT_COUNTRY = RecentLevel(("country_id",), MinuteCountryViews)
RECENT_TOTAL = RecentLevel((), MinuteViews)
RECENT_LEVELS = (RECENT_BLOG_COUNTRY, RECENT_BLOG, RECENT_COUNTRY, RECENT_TOTAL)
# How long the per-minute rows are kept: the realtime window (30 minutes) and room for the
# clocks of the web and worker processes to differ and for absorb to fall behind.
RECENT_KEEP = timedelta(hours=1)
RECENT_BLOCK_MINUTES = 5
# The realtime window: the current UTC minute and the ones before it.
RECENT_WINDOW_MINUTES = 30


@dataclass(frozen=True)
class RecentWindow:
    """Sums of a per-minute level (``source``, with the same ``columns``) over whole realtime
    windows, per window end."""

    columns: tuple[str, ...]
    model: type[Summary]
    source: RecentLevel

    @property
    def table(self) -> str:
        return self.model._meta.db_table

    @property
    def keys(self) -> tuple[str, ...]:
        return ("window_end", *self.columns)


RECENT_WINDOW_BLOG = RecentWindow(("blog_id",), WindowBlogViews, RECENT_BLOG)
RECENT_WINDOW_COUNTRY = RecentWindow(("country_id",), WindowCountryViews, RECENT_COUNTRY)
RECENT_WINDOW_BLOG_COUNTRY = RecentWindow(
    ("blog_id", "country_id"), WindowBlogCountryViews, RECENT_BLOG_COUNTRY
)
RECENT_WINDOWS = (RECENT_WINDOW_BLOG, RECENT_WINDOW_COUNTRY, RECENT_WINDOW_BLOG_COUNTRY)
# A refresh rolls the window rows forward from the last window they hold (adding the minutes
# that enter, subtracting those that leave) when its window is at most this many minutes
# later; past that, or when they do not hold at the watermark, it sums them again from the
# per-minute rows.
RECENT_WINDOW_ROLL_MINUTES = 5

SUMMARY_TABLES = (
    *(level.daily for level in LEVELS),
    *(level.monthly for level in LEVELS if level.monthly is not None),
    *(level.yearly for level in LEVELS if level.yearly is not None),
    *(level.trailing for level in LEVELS if level.trailing is not None),
    *(table for level in RECENT_LEVELS for table in level.tables),
    *(window.table for window in RECENT_WINDOWS),
    PRESENCE,
    COUNTRY_BLOGS,
    ALL_TIME_COUNTRY_BLOGS,
    LAST_DAY_COUNTRY_BLOGS,
    LAST_DAYS,
    MONTH_RANGE_COUNTRY_BLOGS,
)


def recent_cut(now: datetime) -> datetime:
    """The instant from which the per-minute rows are kept at ``now``: ``RECENT_KEEP`` earlier,
    down to a 5-minute boundary (a block is kept whole or not at all)."""
    cut = now - RECENT_KEEP
    return cut.replace(
        minute=cut.minute - cut.minute % RECENT_BLOCK_MINUTES, second=0, microsecond=0
    )


def recent_window_ends(now: datetime) -> tuple[datetime, datetime]:
    """The ends of the realtime windows whose rows a refresh at ``now`` writes: the current
    minute's window (it ends with that minute) and the next minute's. A read finds its window
    among them until the minute after the refresh is over."""
    return window_ends_from(now.replace(second=0, microsecond=0) + timedelta(minutes=1))


def window_ends_from(first: datetime) -> tuple[datetime, datetime]:
    """The ends of the two windows whose rows are kept together, from the first one's
    (``RecentState.recent_window_end``)."""
    return first, first + timedelta(minutes=1)


def _blocks_inside(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The first and the after-last instant of the whole 5-minute blocks inside
    ``start..end`` (the first after the second when there is none)."""
    width = RECENT_BLOCK_MINUTES
    first = start + timedelta(minutes=(-start.minute) % width)
    after = end - timedelta(minutes=end.minute % width)
    return first, after


def level_for(columns: set[str]) -> Level:
    """The smallest level that holds ``columns``."""
    return next(level for level in reversed(LEVELS) if level.answers(columns))


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


def month_range_mask(first_month: int, last_month: int) -> int:
    """The presence rows' ``months`` bits of months ``first_month..last_month``."""
    return (1 << last_month) - (1 << (first_month - 1))


# Every range of whole months of a year, as (first month, last month, its ``months`` bits).
MONTH_RANGES = tuple(
    (first, last, month_range_mask(first, last))
    for first in range(1, 13)
    for last in range(first, 13)
)


# ``MONTH_RANGES`` as a relation ``(first_month, last_month, mask)``.
MONTH_RANGES_SQL = SQL(
    "(VALUES {rows}) AS ranges (first_month, last_month, mask)".format(
        rows=", ".join(f"({first}, {last}, {mask})" for first, last, mask in MONTH_RANGES)
    )
)
