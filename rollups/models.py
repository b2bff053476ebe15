"""Summary tables kept from the raw views, and the bookkeeping that keeps them exact.

Every summary is keyed by day or month (UTC) and by blog and/or country; author questions join
the blog to its author at read time, so a blog that changes author needs no rollup rewrite.
Each table has a unique constraint on its key, which the absorb and rebuild upserts go through.
"""

import uuid
from typing import Any

from django.conf import settings
from django.db import models

from core.models import Blog, Country


def _blog() -> models.ForeignKey:
    return models.ForeignKey(
        Blog, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )


def _country() -> models.ForeignKey:
    return models.ForeignKey(
        Country, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )


class Summary(models.Model):
    """A summary row: a key and the number of raw views counted under it."""

    views = models.BigIntegerField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        key = ", ".join(
            str(getattr(self, field.attname))
            for field in self._meta.concrete_fields
            if field.name not in ("id", "views")
        )
        return f"({key}): {self.views} views"


class DailyViews(Summary):
    """Views per day: series without country or author filters."""

    day = models.DateField(unique=True)


class DailyCountryViews(Summary):
    """Views per (day, country): views by country and series with country filters."""

    day = models.DateField()
    country = _country()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "country"], name="dailycountry_key"),
        ]
        # A few countries' days (a filter naming them, or the excluded ones a series subtracts
        # from the day totals) without reading every country's rows of the range. Not
        # covering: an index holding the count would make every absorb update of it non-HOT.
        indexes = [
            models.Index(fields=["country", "day"], name="dailycountry_country"),
        ]


class MonthlyCountryViews(Summary):
    """Views per (month, country): the whole months of long ranges without blogs or authors."""

    month = models.DateField(help_text="First day of the month.")
    country = _country()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["month", "country"], name="monthlycountry_key"),
        ]


class DailyBlogViews(Summary):
    """Views per (day, blog): top blogs and authors without country filters, edge days."""

    day = models.DateField()
    blog = _blog()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "blog"], name="dailyblog_key")]
        # An author's blogs' days (and their first day, for open ranges) without reading
        # every blog's (migration 0014). Not covering: today's rows change at every absorb.
        indexes = [models.Index(fields=["blog", "day"], name="dailyblog_blog")]


class MonthlyBlogViews(Summary):
    """Views per (month, blog): the whole months of long ranges without country filters."""

    month = models.DateField(help_text="First day of the month.")
    blog = _blog()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["month", "blog"], name="monthlyblog_key")]


class TrailingBlogViews(Summary):
    """Views per (span, blog) of the ``span - 1`` days before ``AbsorbState.monthly_open_from``
    (as ``TrailingBlogCountryViews``): blog and author questions over the last 30 or 90 days,
    and those excluding a few countries (all blogs' views minus those countries')."""

    span = models.PositiveSmallIntegerField(
        help_text="Days of the range the row serves, the open day included."
    )
    blog = _blog()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["span", "blog"], name="trailingblog_key"),
        ]


class YearlyBlogCountryViews(Summary):
    """Views per (year, blog, country), of the days the monthly rows count (before
    ``AbsorbState.monthly_open_from``): blog and author questions with country filters over
    whole years, such as a year or all time for three countries (a year of those countries'
    monthly rows is twelve times the rows).
    """

    year = models.DateField(help_text="First day of the year.")
    blog = _blog()
    country = _country()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["year", "blog", "country"], name="yearlyblogcountry_key"
            ),
        ]
        # Covering, as the monthly rows' (rollups.0015): only the day's fold and late views
        # update these rows, not every absorb.
        indexes = [
            models.Index(
                fields=["country", "year", "blog"],
                include=["views"],
                name="yearlyblogcountry_country",
            ),
            models.Index(
                fields=["blog", "year", "country"], include=["views"], name="yearlyblogcountry_blog"
            ),
        ]


class TrailingBlogCountryViews(Summary):
    """Views per (span, blog, country) of the ``span - 1`` days before
    ``AbsorbState.monthly_open_from`` (``rollups.tables.TRAILING_SPANS``): with the open day's
    daily rows, the last 30 or 90 days (the dashboard's ranges) of blog and author questions
    with country filters. Those read a month and a few days of (blog, country) rows per 30 days
    otherwise (27 k rows for three countries over 90 days at 10 M views).
    """

    span = models.PositiveSmallIntegerField(
        help_text="Days of the range the row serves, the open day included."
    )
    blog = _blog()
    country = _country()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["span", "blog", "country"], name="trailingblogcountry_key"
            ),
        ]
        # Covering, as the yearly rows': only the day's fold and late views update them.
        indexes = [
            models.Index(
                fields=["span", "country", "blog"],
                include=["views"],
                name="trailingblogcountry_country",
            ),
            models.Index(
                fields=["blog", "span", "country"],
                include=["views"],
                name="trailingblogcountry_blog",
            ),
        ]


class DailyBlogCountryViews(Summary):
    """Views per (day, blog, country): any filter combination, and distinct blogs, by day."""

    day = models.DateField()
    blog = _blog()
    country = _country()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "blog", "country"], name="dailyblogcountry_key"),
        ]
        # Reads that keep or drop a few countries touch only those countries' rows; reads for
        # one author only the rows of that author's blogs. Not covering (no INCLUDE of the
        # count): an index that holds the count makes every upsert that adds to it a non-HOT
        # update, which writes every index of the table (migration rollups.0011).
        indexes = [
            models.Index(fields=["country", "day", "blog"], name="dailyblogcountry_country"),
            models.Index(fields=["blog", "day", "country"], name="dailyblogcountry_blog"),
        ]


class MonthlyBlogCountryViews(Summary):
    """Views per (month, blog, country): the whole months of long ranges with any filter.

    Only the views of days before ``AbsorbState.monthly_open_from`` (today) are counted here:
    the views of the day that is still open, nearly all an absorb sees, go to the daily rows
    alone, and the day is folded into its month's rows from them once it has ended.
    """

    month = models.DateField(help_text="First day of the month.")
    blog = _blog()
    country = _country()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["month", "blog", "country"], name="monthlyblogcountry_key"
            ),
        ]
        indexes = [
            # Both covering (migrations 0014, 0015): a country's or an author's months are read
            # index-only. The rows change only when a day is folded in or late views arrive,
            # so the non-HOT updates an indexed count causes are rare here (unlike the daily
            # rows, whose author index 0011 made not covering).
            models.Index(
                fields=["country", "month", "blog"],
                include=["views"],
                name="monthlyblogcountry_country",
            ),
            models.Index(
                fields=["blog", "month", "country"],
                include=["views"],
                name="monthlyblogcountry_blog",
            ),
        ]


class MinuteBlogCountryViews(Summary):
    """Views per (UTC minute, blog, country) of the last hour or so (``RECENT_KEEP``): the
    realtime answer's filtered questions. Absorb adds each view whose minute is at or after
    ``AbsorbState.recent_from`` and drops the rows before it.

    The per-minute tables have their key as primary key and no ``id``: nearly every row they
    get is new (a minute's rows are written by the absorb runs of that minute), and each index
    fewer is a write fewer per row (migration 0012). Every read of this table names blogs (an
    author's) or countries, never only minutes: the key leads with the blog, so that an
    author's rows are found blog by blog, and the other index with the country (migration
    0016; a minute-first key had an author's question read every row of the window), covering
    the count (0018): a question naming countries reads their rows index-only once the
    realtime tables are vacuumed (``rollups.tending``).
    """

    minute = models.DateTimeField(help_text="The minute's first instant (UTC).")
    blog = _blog()
    country = _country()

    pk = models.CompositePrimaryKey("blog", "minute", "country")

    class Meta:
        indexes = [
            models.Index(
                fields=["country", "minute", "blog"],
                include=("views",),
                name="minuteblogcountry_country",
            ),
        ]


class MinuteBlogViews(Summary):
    """Views per (UTC minute, blog) of the last hour or so: the realtime window's edge minutes,
    and an author's minutes (through the blog-first index)."""

    minute = models.DateTimeField(help_text="The minute's first instant (UTC).")
    blog = _blog()

    pk = models.CompositePrimaryKey("minute", "blog")

    class Meta:
        indexes = [models.Index(fields=["blog", "minute"], name="minuteblog_blog")]


class FiveMinuteBlogViews(Summary):
    """Views per (5 UTC minutes, blog) of the last hour or so: the realtime window's whole
    5-minute blocks, a fifth of the rows of its minutes."""

    minute = models.DateTimeField(help_text="The block's first instant (UTC, minute % 5 = 0).")
    blog = _blog()

    pk = models.CompositePrimaryKey("minute", "blog")

    class Meta:
        indexes = [models.Index(fields=["blog", "minute"], name="fiveminuteblog_blog")]


class MinuteCountryViews(Summary):
    """Views per (UTC minute, country) of the last hour or so: the realtime answer's minutes
    and countries without an author filter."""

    minute = models.DateTimeField(help_text="The minute's first instant (UTC).")
    country = _country()

    pk = models.CompositePrimaryKey("minute", "country")


class MinuteViews(Summary):
    """Views per UTC minute of the last hour or so: the realtime answer's minutes without
    filters (one row a minute, where the (minute, country) rows have one per country)."""

    minute = models.DateTimeField(primary_key=True, help_text="The minute's first instant (UTC).")


class WindowBlogViews(Summary):
    """Views per blog of a realtime window (the 30 minutes before ``window_end``), for the
    window of the per-minute absorb's current minute and of the next one
    (``RecentState.recent_window_end``), as of its watermark: each absorb chunk adds its
    views, and a new minute's window is rolled from the last one (the minutes that enter it
    added, those that leave it subtracted; ``rollups.absorb.recent_windows_refresh``). An
    unfiltered realtime answer reads the window's most viewed blogs here, and adds the tail:
    the blogs it ranks are the window's ``limit`` first ones and the tail's, whatever the
    number of blogs viewed (``api.planner.recent_views``); a filtered one reads its author's
    blogs here."""

    window_end = models.DateTimeField(help_text="The window's end (exclusive; UTC minute).")
    blog = _blog()

    pk = models.CompositePrimaryKey("window_end", "blog")

    class Meta:
        indexes = [
            models.Index(
                "window_end", models.F("views").desc(), "blog", name="windowblog_most_viewed"
            )
        ]


class WindowCountryViews(Summary):
    """Views per country of a realtime window, as ``WindowBlogViews`` for blogs."""

    window_end = models.DateTimeField(help_text="The window's end (exclusive; UTC minute).")
    country = _country()

    pk = models.CompositePrimaryKey("window_end", "country")


class WindowBlogCountryViews(Summary):
    """Views per (blog, country) of a realtime window, as ``WindowBlogViews`` for blogs: the
    filtered realtime answers' blogs and countries (the blogs viewed from some countries, the
    countries of an author's blogs) from one row per pair viewed in the window, where the
    (minute, blog, country) rows have one per minute it was viewed in (a window of 180,000
    views over 20,000 pairs: 20,000 rows instead of 150,000).

    The key leads with the blog, for an author's blogs; the other index with the country, for
    named countries. It does not cover the count: absorb updates the counts every few seconds,
    so an index-only read would fetch nearly every row from the table anyway, and an
    uncovered count lets those updates be HOT (no new index entries)."""

    window_end = models.DateTimeField(help_text="The window's end (exclusive; UTC minute).")
    blog = _blog()
    country = _country()

    pk = models.CompositePrimaryKey("window_end", "blog", "country")

    class Meta:
        indexes = [
            models.Index(fields=["window_end", "country", "blog"], name="windowblogcountry_country")
        ]


class DayBits(models.Field):
    """A year's days as a bit string (bit n = day of year n + 1): ``bit(366)`` on PostgreSQL.

    Other databases store nothing in it (presence is a PostgreSQL speed-up; their reads count
    distinct blogs from the daily and monthly rows instead).
    """

    def db_type(self, connection: Any) -> str:
        return "bit(366)" if connection.vendor == "postgresql" else "text"


class YearlyPresence(models.Model):
    """For each (year, country, blog) with views: the days it had any (PostgreSQL only).

    Answers "how many distinct blogs were viewed from each country" for any day range from one
    row per pair and year, instead of every (day, blog, country) row of the range.

    On PostgreSQL, migration ``rollups.0019`` adds two columns the model does not declare (no
    other database has them): ``months``, generated from ``days`` (bit ``m - 1`` set when
    month ``m`` has a view), and ``months_added``, the months the latest absorb upsert of the
    row added (``RETURNING`` gives only the row after an update; with this it also tells what
    was new, for ``MonthRangeCountryBlogs``).
    """

    year = models.SmallIntegerField()
    country = _country()
    blog = _blog()
    days = DayBits()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["year", "country", "blog"], name="yearlypresence_key"),
        ]
        # Distinct blogs per country for one author: only the rows of that author's blogs (the
        # bits are not in the index, so that setting a day's bit stays a HOT update).
        indexes = [
            models.Index(fields=["blog", "year", "country"], name="yearlypresence_blog"),
        ]

    def __str__(self) -> str:
        return f"({self.year}, {self.country_id}, {self.blog_id})"


class YearlyCountryBlogs(models.Model):
    """Distinct blogs viewed from each country in each year (PostgreSQL only).

    The number of presence rows per (year, country), kept with them: a whole-year question
    reads one row per country instead of counting the year's presence rows.
    """

    year = models.SmallIntegerField()
    country = _country()
    blogs = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["year", "country"], name="yearlycountryblogs_key"),
        ]

    def __str__(self) -> str:
        return f"({self.year}, {self.country_id}): {self.blogs} blogs"


class AllTimeCountryBlogs(models.Model):
    """Distinct blogs viewed from each country, all time (PostgreSQL only).

    The number of (country, blog) pairs with a presence row in any year, kept with them: an
    all-time question (or one whose range holds every absorbed day) reads one row per country
    instead of counting the distinct blogs of every year's presence rows (255 k rows sorted at
    10 M views).
    """

    country = _country()
    blogs = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["country"], name="alltimecountryblogs_key"),
        ]

    def __str__(self) -> str:
        return f"({self.country_id}): {self.blogs} blogs"


class MonthRangeCountryBlogs(models.Model):
    """Distinct blogs viewed from each country in each range of whole months of a year
    (``first_month..last_month``, 78 ranges a year), over every absorbed view (PostgreSQL only).

    A range such as February to May reaches neither end of the data, so neither the all-time
    nor the last-day counts answer it; this reads one row per country instead of testing the
    year's presence rows against the range's bit mask (84 k rows at 10 M views, 33 ms). Kept
    from the presence rows' ``months`` (a PostgreSQL generated column, migration
    ``rollups.0019``): absorb adds a pair to each range that holds one of the months it was
    first seen in and none it was seen in before.
    """

    year = models.SmallIntegerField()
    first_month = models.SmallIntegerField()
    last_month = models.SmallIntegerField()
    country = _country()
    blogs = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["year", "first_month", "last_month", "country"],
                name="monthrangecountryblogs_key",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"({self.year}, {self.first_month}..{self.last_month}, {self.country_id}): "
            f"{self.blogs} blogs"
        )


class LastDayCountryBlogs(models.Model):
    """For each country and day: how many of its (country, blog) pairs were last viewed that
    day, over every absorbed view (PostgreSQL only).

    A range that reaches the last absorbed day holds a pair's views exactly when it holds the
    pair's last one: the distinct blogs per country of "the last 90 days" are the sum of the
    rows from its first day on (21 k rows at 10 M views), instead of testing the year's 208 k
    presence rows against the range's bit mask. Absorb moves a pair from its old day to its new
    one (a row may fall to 0 blogs; the first run of a day deletes those).
    """

    country = _country()
    day = models.DateField()
    blogs = models.IntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["country", "day"], name="lastdaycountryblogs_key"),
        ]

    def __str__(self) -> str:
        return f"({self.country_id}, {self.day}): {self.blogs} blogs"


class BlockDays(models.Field):
    """One block of blogs' last days as an array of ``LAST_DAYS_BLOCK`` dates (slot ``n`` for
    the blog whose id modulo the block size is ``n - 1``; ``-infinity`` for a blog with no
    view): ``date[]`` on PostgreSQL, ``text`` elsewhere (which stores nothing in it)."""

    def db_type(self, connection: Any) -> str:
        return "date[]" if connection.vendor == "postgresql" else "text"


class CountryBlogLastDays(models.Model):
    """Each (country, blog) pair's last absorbed day with a view, by country and block of 256
    blog ids, one array of days per row (PostgreSQL only).

    The same facts as ``LastDayCountryBlogs`` counts, kept per pair for the tail: a read whose
    range reaches the last absorbed day must add the tail's (country, blog) pairs that have no
    absorbed view in the range, and a pair has one exactly when its last day is in the range.
    Probing the presence index for each of the tail's pairs cost 5-10 us a pair (12 k pairs
    with 50,000 pending views: 60-160 ms); this is a join of one row per (country, block),
    about 2,000 of them, and an array subscript a pair. The blocks keep each row near 1 KB,
    inline (a longer array would be compressed and read whole at every subscript); ids are
    dense, so rows are few: one per country and 256 blogs that have a view from it.
    """

    country = _country()
    block = models.IntegerField(help_text="The blog id divided by the block size (256).")
    days = BlockDays()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["country", "block"], name="countrybloglastdays_key"),
        ]

    def __str__(self) -> str:
        return f"({self.country_id}, block {self.block})"


class AbsorbState(models.Model):
    """The watermark: every raw view with ``id <= absorbed_through_id`` is in the summaries.

    A single row (``name="views"``), updated in the same transaction as the summary increments.
    """

    name = models.CharField(max_length=50, primary_key=True)
    absorbed_through_id = models.BigIntegerField(default=0)
    absorbed_through_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Every view committed before this time is absorbed (when the last bound was "
        "taken); the lag is measured from it.",
    )
    monthly_open_from = models.DateField(
        null=True,
        blank=True,
        help_text="The monthly (blog, country) rows count exactly the views of the days "
        "before this one (empty: of every day); later days are read from the daily rows.",
    )
    raw_retained_from = models.DateField(
        null=True,
        blank=True,
        help_text="The raw-view retention (RAW_RETENTION_MONTHS) dropped raw views before this "
        "day: their summaries are the only record of them, so these days are never rebuilt or "
        "audited (empty: no raw view was dropped).",
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_run_views = models.BigIntegerField(default=0)
    rebuild_version = models.BigIntegerField(
        default=0, help_text="Bumped by every rebuild; part of every analytics cache key."
    )

    def __str__(self) -> str:
        return f"{self.name} absorbed through id {self.absorbed_through_id}"


class RecentState(models.Model):
    """The per-minute levels' own watermark: every raw view with ``id <= absorbed_through_id``
    viewed at or after ``recent_from`` is in them (``rollups.absorb.rollups_absorb_recent``).

    A single row (``name="views"``), beside ``AbsorbState``'s and locked on its own, so that
    the per-minute levels are absorbed in their own transactions, concurrently with the
    summaries' (a rebuild or a wipe locks ``AbsorbState``'s row first, then this one).
    """

    name = models.CharField(max_length=50, primary_key=True)
    absorbed_through_id = models.BigIntegerField(default=0)
    recent_from = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The per-minute rows count exactly the views up to the watermark viewed at "
        "or after this instant (a 5-minute boundary; empty: no per-minute rows yet).",
    )
    recent_window_end = models.DateTimeField(
        null=True,
        blank=True,
        help_text="The realtime window rows sum the per-minute rows of the 30 minutes before "
        "this instant and of the 30 before the minute after it.",
    )
    recent_window_through_id = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="The watermark the realtime window rows were summed at: they hold only while "
        "it is the current one (empty: none).",
    )
    last_run_at = models.DateTimeField(null=True, blank=True)
    last_run_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_run_views = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name} per-minute rows through id {self.absorbed_through_id}"


class RebuildJob(models.Model):
    """A request to recompute the summaries of a date range from the raw views."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    start_date = models.DateField(null=True, blank=True, help_text="Empty = the earliest view.")
    end_date = models.DateField(null=True, blank=True, help_text="Empty = the latest view.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0 to 1.")
    views_rebuilt = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"rebuild {self.start_date or '…'} to {self.end_date or '…'} ({self.state})"


class RollupAudit(models.Model):
    """One drift audit: the days recounted from raw and every summary group that differed.

    ``drifts`` holds one ``{"day", "table", "blog_id", "country_id", "expected", "found"}`` per
    differing group (``blog_id`` / ``country_id`` null in the levels without them).
    """

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    days = models.JSONField(help_text="The UTC days recounted (ISO dates).")
    absorbed_through_id = models.BigIntegerField(
        help_text="The watermark of the snapshot: only views up to this id were recounted."
    )
    views_recounted = models.BigIntegerField(default=0)
    drift_groups = models.IntegerField(default=0)
    drift_days = models.JSONField(
        default=list, blank=True, help_text="The days with any drifting group (ISO dates)."
    )
    drifts = models.JSONField(
        default=list, blank=True, help_text="The drifting groups (the first 1,000)."
    )
    repair_jobs = models.JSONField(
        default=list, blank=True, help_text="Rebuild jobs queued for the drifting days."
    )

    class Meta:
        ordering = ["-finished_at"]

    def __str__(self) -> str:
        return f"audit of {len(self.days)} day(s) at {self.finished_at:%Y-%m-%d %H:%M}: " + (
            f"{self.drift_groups} drifting group(s)" if self.drift_groups else "no drift"
        )
