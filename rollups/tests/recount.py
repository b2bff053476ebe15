"""An independent recount of every summary from the raw views, in plain Python."""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta

from django.db import connection, transaction

from ingest.models import BlogView
from rollups.models import (
    AbsorbState,
    AllTimeCountryBlogs,
    LastDayCountryBlogs,
    MonthRangeCountryBlogs,
    RecentState,
    Summary,
    YearlyCountryBlogs,
    YearlyPresence,
)
from rollups.tables import (
    LAST_DAYS,
    LAST_DAYS_BLOCK,
    LEVELS,
    MONTH_RANGES,
    RECENT_BLOCK_MINUTES,
    RECENT_LEVELS,
    RECENT_WINDOW_MINUTES,
    RECENT_WINDOWS,
    STATE_NAME,
    TRAILING_SPANS,
    window_ends_from,
)


def pair_last_days() -> dict[tuple[str, int], date]:
    """The last day of each (country, blog) pair as ``CountryBlogLastDays`` holds it
    (PostgreSQL), blocks unpacked."""
    stored = {}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT country_id, block, days::text[] FROM {LAST_DAYS}")
        for country, block, days in cursor.fetchall():
            assert len(days) == LAST_DAYS_BLOCK, f"a block of {len(days)} days"
            for slot, day in enumerate(days):
                if day != "-infinity":
                    stored[country, block * LAST_DAYS_BLOCK + slot] = date.fromisoformat(day)
    return stored


# Every summary table's rows, by table name: ``{key: views}``.
Tables = dict[str, Counter]


def recount_from_raw(*, through_id: int | None = None) -> Tables:
    """What every summary must hold, counted from raw (views with ``id <= through_id``).

    The monthly and yearly rows of a folded level count only the days before the open one;
    the trailing rows of each span the ``span - 1`` days before it. The per-minute rows count
    the views up to their own watermark (``RecentState``), whatever ``through_id`` says.
    """
    rows = BlogView.objects.all()
    if through_id is not None:
        rows = rows.filter(id__lte=through_id)
    open_from = (
        AbsorbState.objects.filter(name=STATE_NAME)
        .values_list("monthly_open_from", flat=True)
        .first()
    )
    expected: Tables = {table: Counter() for table, _ in _tables()}
    for blog, country, viewed_at in rows.values_list("blog_id", "country_id", "viewed_at"):
        day = viewed_at.date()
        month = day.replace(day=1)
        values = {"blog_id": blog, "country_id": country}
        for level in LEVELS:
            key = tuple(values[column] for column in level.columns)
            expected[level.daily][(day, *key)] += 1
            if level.monthly is not None and (
                not level.monthly_folded or open_from is None or day < open_from
            ):
                expected[level.monthly][(month, *key)] += 1
                if level.yearly is not None:
                    expected[level.yearly][(date(day.year, 1, 1), *key)] += 1
            if level.trailing is not None and open_from is not None:
                for span in TRAILING_SPANS:
                    if open_from - timedelta(days=span - 1) <= day < open_from:
                        expected[level.trailing][(span, *key)] += 1
    state = RecentState.objects.filter(name=STATE_NAME).first()
    if state is None or state.recent_from is None:
        return expected
    kept = BlogView.objects.filter(
        id__lte=state.absorbed_through_id, viewed_at__gte=state.recent_from
    )
    for blog, country, viewed_at in kept.values_list("blog_id", "country_id", "viewed_at"):
        values = {"blog_id": blog, "country_id": country}
        minute = viewed_at.replace(second=0, microsecond=0)
        block = minute.replace(minute=minute.minute - minute.minute % RECENT_BLOCK_MINUTES)
        for recent in RECENT_LEVELS:
            key = tuple(values[column] for column in recent.columns)
            expected[recent.minute_table][(minute, *key)] += 1
            if recent.block_table is not None:
                expected[recent.block_table][(block, *key)] += 1
    return expected


def _tables() -> list[tuple[str, tuple[type[Summary], tuple[str, ...]]]]:
    """Each summary table's name, with its model and key columns."""
    tables = []
    for level in LEVELS:
        tables.append((level.daily, (level.daily_model, level.daily_keys)))
        if level.monthly is not None and level.monthly_model is not None:
            tables.append((level.monthly, (level.monthly_model, level.monthly_keys)))
        if level.yearly is not None and level.yearly_model is not None:
            tables.append((level.yearly, (level.yearly_model, level.yearly_keys)))
        if level.trailing is not None and level.trailing_model is not None:
            tables.append((level.trailing, (level.trailing_model, level.trailing_keys)))
    for recent in RECENT_LEVELS:
        tables.append((recent.minute_table, (recent.minute_model, recent.keys)))
        if recent.block_table is not None and recent.block_model is not None:
            tables.append((recent.block_table, (recent.block_model, recent.keys)))
    return tables


def summaries_in_db() -> Tables:
    """Every summary's rows as ``{key: views}``; rows with 0 views would be a bug, kept visible."""
    found: Tables = {}
    for name, (model, keys) in _tables():
        found[name] = Counter()
        for row in model._default_manager.values_list(*keys, "views"):
            key = tuple(_as_date(value) for value in row[:-1])
            assert key not in found[name], f"duplicate key {key} in {name}"
            found[name][key] = row[-1]
    return found


def _as_date(value: object) -> object:
    return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else value


def presence_from_raw(*, through_id: int | None = None) -> dict[tuple[int, str, int], str]:
    """The yearly presence rows: for each (year, country, blog), its days as a 366-bit string."""
    rows = BlogView.objects.all()
    if through_id is not None:
        rows = rows.filter(id__lte=through_id)
    days: dict[tuple[int, str, int], set[int]] = {}
    for blog, country, viewed_at in rows.values_list("blog_id", "country_id", "viewed_at"):
        day = viewed_at.date()
        days.setdefault((day.year, country, blog), set()).add(day.timetuple().tm_yday - 1)
    return {
        key: "".join("1" if bit in bits else "0" for bit in range(366))
        for key, bits in days.items()
    }


def windows_from_raw() -> dict[str, dict[datetime, Counter]]:
    """What the realtime window rows must hold when the state says they hold (else nothing):
    per window end, the absorbed views of its 30 minutes per blog and per country (up to the
    per-minute rows' watermark)."""
    state = RecentState.objects.filter(name=STATE_NAME).first()
    if (
        state is None
        or state.recent_window_end is None
        or state.recent_window_through_id != state.absorbed_through_id
    ):
        return {}
    ends = window_ends_from(state.recent_window_end)
    expected: dict[str, dict[datetime, Counter]] = {
        window.table: {end: Counter() for end in ends} for window in RECENT_WINDOWS
    }
    rows = BlogView.objects.filter(
        id__lte=state.absorbed_through_id,
        viewed_at__gte=ends[0] - timedelta(minutes=RECENT_WINDOW_MINUTES),
        viewed_at__lt=ends[1],
    )
    for blog, country, viewed_at in rows.values_list("blog_id", "country_id", "viewed_at"):
        values = {"blog_id": blog, "country_id": country}
        for end in ends:
            if end - timedelta(minutes=RECENT_WINDOW_MINUTES) <= viewed_at < end:
                for window in RECENT_WINDOWS:
                    key = tuple(values[column] for column in window.columns)
                    expected[window.table][end][key] += 1
    return expected


def windows_in_db() -> dict[str, dict[datetime, Counter]]:
    """The realtime window rows, per table and window end."""
    found: dict[str, dict[datetime, Counter]] = {}
    for window in RECENT_WINDOWS:
        by_end: dict[datetime, Counter] = {}
        for end, *key, views in window.model._default_manager.values_list(
            "window_end", *window.columns, "views"
        ):
            by_end.setdefault(end, Counter())[tuple(key)] = views
        found[window.table] = by_end
    return found


@contextmanager
def _one_snapshot() -> Iterator[None]:
    """Read the block in one snapshot, so that absorbs committing meanwhile (a live stack's
    worker runs the per-minute one every few seconds) cannot make the state rows, the raw
    views and the summaries read disagree; inside a transaction already, in that one."""
    if connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield


def assert_summaries_exact(*, through_id: int | None = None) -> None:
    """Every summary equals the recount from raw, table by table, key by key; and so do the
    realtime window rows, when the state says they hold. All read in one snapshot."""
    with _one_snapshot():
        _assert_summaries_exact(through_id=through_id)


def _assert_summaries_exact(*, through_id: int | None) -> None:
    expected = recount_from_raw(through_id=through_id)
    found = summaries_in_db()
    for name, _ in _tables():
        assert dict(found[name]) == dict(expected[name]), name
    windows = windows_from_raw()
    if windows:
        in_db = windows_in_db()
        for table, by_end in windows.items():
            summed = {end: dict(counts) for end, counts in in_db[table].items() if counts}
            assert summed == {end: dict(counts) for end, counts in by_end.items() if counts}, table
    if connection.vendor == "postgresql":
        stored = {
            (year, country, blog): days
            for year, country, blog, days in YearlyPresence.objects.values_list(
                "year", "country_id", "blog_id", "days"
            )
        }
        expected_presence = presence_from_raw(through_id=through_id)
        assert stored == expected_presence, "presence"
        per_country: Counter = Counter((year, country) for year, country, _ in expected_presence)
        counted = {
            (year, country): blogs
            for year, country, blogs in YearlyCountryBlogs.objects.values_list(
                "year", "country_id", "blogs"
            )
        }
        assert counted == dict(per_country), "yearly country blogs"
        pairs = {(country, blog) for _, country, blog in expected_presence}
        all_time: Counter = Counter(country for country, _ in pairs)
        kept = dict(AllTimeCountryBlogs.objects.values_list("country_id", "blogs"))
        assert kept == dict(all_time), "all-time country blogs"
        last_days: dict[tuple[str, int], date] = {}
        for (year, country, blog), days in expected_presence.items():
            last = date(year, 1, 1) + timedelta(days=days.rindex("1"))
            last_days[country, blog] = max(last, last_days.get((country, blog), last))
        by_last_day: Counter = Counter((country, day) for (country, _), day in last_days.items())
        stored_last = {
            (country, day): blogs
            for country, day, blogs in LastDayCountryBlogs.objects.values_list(
                "country_id", "day", "blogs"
            )
            # Absorb leaves a row whose pairs all moved on at 0 until the day's first run.
            if blogs
        }
        assert stored_last == dict(by_last_day), "last-day country blogs"
        assert pair_last_days() == last_days, "each pair's last day"
        by_range: Counter = Counter()
        expected_months = {}
        for (year, country, blog), days in expected_presence.items():
            months = {
                (date(year, 1, 1) + timedelta(days=bit)).month
                for bit, flag in enumerate(days)
                if flag == "1"
            }
            expected_months[year, country, blog] = sum(1 << (month - 1) for month in months)
            for first_month, last_month, _ in MONTH_RANGES:
                if any(first_month <= month <= last_month for month in months):
                    by_range[year, first_month, last_month, country] += 1
        with connection.cursor() as cursor:
            cursor.execute("SELECT year, country_id, blog_id, months FROM rollups_yearlypresence")
            stored_months = {tuple(row[:3]): row[3] for row in cursor.fetchall()}
        assert stored_months == expected_months, "presence months"
        stored_ranges = {
            key[:4]: key[4]
            for key in MonthRangeCountryBlogs.objects.values_list(
                "year", "first_month", "last_month", "country_id", "blogs"
            )
        }
        assert stored_ranges == dict(by_range), "month-range country blogs"


def watermark() -> int:
    """The absorb watermark now (0 before the first run)."""
    state = AbsorbState.objects.filter(name=STATE_NAME).first()
    return state.absorbed_through_id if state else 0
