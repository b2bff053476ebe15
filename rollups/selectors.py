"""The rollups' reads: how far absorb is behind, and the current rebuild version (which
the analytics cache checks its answers against)."""

from dataclasses import dataclass
from datetime import date, datetime

from django.core.cache import caches
from django.db import connection, connections
from django.db.models import Max
from django.utils import timezone

from core.cache import RedisCache
from core.routers import read_alias
from core.sql import as_date, as_moment
from ingest.models import BlogView
from rollups.models import AbsorbState, DailyViews, RecentState
from rollups.tables import STATE_NAME

# The cache entry holding the rebuild version (see rollups.rebuild.rebuild_version_publish) and
# its lifetime.
REBUILD_VERSION_KEY = "analytics:rebuild-version"
REBUILD_VERSION_SECONDS = 5


@dataclass(frozen=True)
class RollupStatus:
    pending_views: int
    absorbed_through_id: int
    last_run_at: datetime | None
    last_run_duration_ms: int | None
    lag_seconds: float


def rollups_status() -> RollupStatus:
    """How far the summaries are behind the raw table.

    ``lag_seconds`` is 0 when nothing is pending, else the time since the last bound was taken
    (``absorbed_through_at``): every view pending now was committed after it, so none has waited
    longer.
    """
    state = AbsorbState.objects.filter(name=STATE_NAME).first()
    watermark = state.absorbed_through_id if state else 0
    pending = BlogView.objects.filter(id__gt=watermark).count()
    last_run_at = state.last_run_at if state else None
    if pending == 0:
        lag = 0.0
    elif state is None or state.absorbed_through_at is None:
        oldest = BlogView.objects.filter(id__gt=watermark).order_by("id").first()
        lag = (timezone.now() - oldest.viewed_at).total_seconds() if oldest else 0.0
    else:
        lag = (timezone.now() - state.absorbed_through_at).total_seconds()
    return RollupStatus(
        pending_views=pending,
        absorbed_through_id=watermark,
        last_run_at=last_run_at,
        last_run_duration_ms=state.last_run_duration_ms if state else None,
        lag_seconds=round(max(lag, 0.0), 3),
    )


@dataclass(frozen=True)
class RecentStatus:
    """How far the per-minute levels (their own watermark, ``RecentState``) are behind."""

    absorbed_through_id: int
    pending_ids: int
    last_run_at: datetime | None


def recent_status() -> RecentStatus:
    """The per-minute levels' watermark, the raw ids above it (views of any day: only those of
    the last hour go into them) and when their last absorb run finished."""
    state = RecentState.objects.filter(name=STATE_NAME).first()
    watermark = state.absorbed_through_id if state else 0
    top = BlogView.objects.aggregate(top=Max("id"))["top"] or 0
    return RecentStatus(
        absorbed_through_id=watermark,
        pending_ids=max(top - watermark, 0),
        last_run_at=state.last_run_at if state else None,
    )


@dataclass(frozen=True)
class ReadPosition:
    """What a reader needs of the state rows: the summaries' watermark (views above it are
    only in raw), the rebuild version, the day the folded monthly rows stop before (None:
    none); and of the per-minute levels' (``RecentState``): their watermark, the instant they
    start at (None: none kept), and the realtime windows the window rows sum (the first one's
    end, and the per-minute watermark they were summed at). Also the first and the last day
    of the absorbed views (None: none), which tell whether a range holds every absorbed day or
    reaches the last one (two index probes of the per-day rows, in the same round trip)."""

    watermark: int
    rebuild_version: int
    monthly_open_from: date | None
    recent_watermark: int = 0
    recent_from: datetime | None = None
    recent_window_end: datetime | None = None
    recent_window_through_id: int | None = None
    first_absorbed_day: date | None = None
    last_absorbed_day: date | None = None


# Both rows in one statement, either one possibly missing (no run yet).
_POSITION_SQL = (
    "SELECT v.absorbed_through_id, v.rebuild_version, v.monthly_open_from, "
    "r.absorbed_through_id, r.recent_from, r.recent_window_end, r.recent_window_through_id, "
    f"(SELECT min(day) FROM {DailyViews._meta.db_table}), "
    f"(SELECT max(day) FROM {DailyViews._meta.db_table}) "
    f"FROM (SELECT 1 AS one) one LEFT JOIN {AbsorbState._meta.db_table} v ON v.name = %s "
    f"LEFT JOIN {RecentState._meta.db_table} r ON r.name = %s"
)


def read_position(*, first: str = "") -> ReadPosition:
    """The state rows as the current transaction sees them (one query, on the database the
    answer is read from: ``core.routers.reading_from``), after the statements ``first`` (no
    parameters; ``;``-terminated), sent in the same round trip: a reader opens its snapshot
    and reads where it stands in one (``api.planner.read_snapshot``).

    Plain SQL, as ``rebuild_version``: every uncached answer pays for this query, and the
    ORM's compile step cost 0.85 ms of its 0.95 (measured over 1,000 calls).
    """
    with connections[read_alias()].cursor() as cursor:
        cursor.execute(first + _POSITION_SQL, [STATE_NAME, STATE_NAME])
        row = cursor.fetchone()
    (
        watermark,
        version,
        open_from,
        recent,
        recent_from,
        window_end,
        window_through_id,
        first_day,
        last_day,
    ) = row
    return ReadPosition(
        watermark=int(watermark or 0),
        rebuild_version=int(version or 0),
        monthly_open_from=None if open_from is None else as_date(open_from),
        recent_watermark=int(recent or 0),
        recent_from=None if recent_from is None else as_moment(recent_from),
        recent_window_end=None if window_end is None else as_moment(window_end),
        recent_window_through_id=None if window_through_id is None else int(window_through_id),
        first_absorbed_day=None if first_day is None else as_date(first_day),
        last_absorbed_day=None if last_day is None else as_date(last_day),
    )


_VERSION_SQL = f"SELECT rebuild_version FROM {AbsorbState._meta.db_table} WHERE name = %s"


def rebuild_version() -> int:
    """The current rebuild version, read from the database.

    Plain SQL: a cached answer on the embedded default pays for this query, and the ORM's
    compile step costs more than the query itself.
    """
    with connection.cursor() as cursor:
        cursor.execute(_VERSION_SQL, [STATE_NAME])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def rebuild_version_cached() -> bool:
    """Whether the rebuild version is also kept in the cache: only a cache that every process
    shares (Redis) can tell every reader that a rebuild happened."""
    return isinstance(caches["default"], RedisCache)
