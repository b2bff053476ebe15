"""The raw table's monthly partitions (ingest.partitions): created ahead, views of any accepted
month stored and counted, absorb / rebuild / tail across a month boundary, and the migration
that converts a plain table with its views."""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.models import Blog
from core.testing import migrate_to
from ingest.models import BlogView
from ingest.partitions import (
    AHEAD_MONTHS,
    DEFAULT_PARTITION,
    RAW,
    add_months,
    months_between,
    partition_name,
    raw_is_partitioned,
    raw_partitions,
    raw_partitions_ensure,
)
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending
from rollups.rebuild import rollups_rebuild
from rollups.tests.recount import assert_summaries_exact, watermark

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="PostgreSQL only: SQLite keeps the raw views in a plain table",
)
INGEST = "/api/ingest/views/"
PERFORMANCE = "/api/analytics/performance/"
TOP_BLOG = "/api/analytics/top/blog/"


def _today() -> date:
    return timezone.now().astimezone(UTC).date()


def _partition_of(view_id: int) -> str:
    """The partition (PostgreSQL) holding the view."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {RAW} WHERE id = %s", [view_id])
        return str(cursor.fetchone()[0])


def _stored() -> list[tuple[int, int, str, datetime]]:
    return sorted(BlogView.objects.values_list("id", "blog_id", "country_id", "viewed_at"))


@pytest.fixture
def blog_id(author) -> int:
    return Blog.objects.create(title="Notes", author=author).pk


@pytest.fixture
def reader(auth_client, user):
    client = auth_client(user)

    def read(url: str, body: dict) -> dict:
        response = client.post(url, body, format="json", HTTP_CACHE_CONTROL="no-cache")
        assert response.status_code == 200, response.content
        return response.json()

    return read


def test_months_and_names():
    assert add_months(date(2024, 11, 1), 3) == date(2025, 2, 1)
    assert add_months(date(2024, 1, 1), -13) == date(2022, 12, 1)
    assert months_between(date(2024, 11, 20), date(2025, 2, 1)) == [
        date(2024, 11, 1),
        date(2024, 12, 1),
        date(2025, 1, 1),
        date(2025, 2, 1),
    ]
    assert partition_name(date(2025, 2, 1)) == "ingest_blogview_p2025_02"


@pytest.mark.django_db
def test_sqlite_keeps_a_plain_table_and_partition_upkeep_does_nothing():
    if connection.vendor == "postgresql":
        pytest.skip("SQLite only: on PostgreSQL the raw table is partitioned")
    assert not raw_is_partitioned()
    assert raw_partitions() == []
    assert raw_partitions_ensure(months=[date(2025, 1, 1)]) == []


@postgres_only
@pytest.mark.django_db
def test_migrate_partitions_the_raw_table_by_month_with_this_month_and_the_next_ones():
    assert raw_is_partitioned()
    current = _today().replace(day=1)
    months = {partition.month for partition in raw_partitions()}
    assert {add_months(current, ahead) for ahead in range(AHEAD_MONTHS + 1)} <= months
    assert None in months  # the default partition
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype = 'p'",
            [RAW],
        )
        assert cursor.fetchone()[0] == "PRIMARY KEY (id, viewed_at)"
    # Nothing to do on a second call the same day.
    assert raw_partitions_ensure() == []


@postgres_only
@pytest.mark.django_db
def test_ensure_creates_months_ahead_and_moves_views_out_of_the_default_partition(blog_id):
    today = _today()
    back = add_months(today.replace(day=1), -5)
    assert back not in {partition.month for partition in raw_partitions()}
    views_record(
        views=[
            (blog_id, "US", datetime(back.year, back.month, 1, tzinfo=UTC)),
            (blog_id, "DE", datetime(back.year, back.month, 28, 23, 59, tzinfo=UTC)),
            (blog_id, "US", timezone.now()),
        ]
    )
    before = _stored()
    assert [_partition_of(view[0]) for view in before] == [
        DEFAULT_PARTITION,
        DEFAULT_PARTITION,
        partition_name(today.replace(day=1)),
    ]

    later = add_months(today.replace(day=1), 4)
    created = raw_partitions_ensure(today=later)

    # The views' month (within the history window) gets its partition, and so do the months
    # up to AHEAD_MONTHS after the later day; the views keep their ids.
    assert created == sorted(
        {back}
        | {add_months(later, ahead) for ahead in range(AHEAD_MONTHS + 1)}
        - {add_months(today.replace(day=1), ahead) for ahead in range(AHEAD_MONTHS + 1)}
    )
    assert _stored() == before
    assert {_partition_of(view[0]) for view in before[:2]} == {partition_name(back)}
    rollups_absorb_pending()
    assert_summaries_exact()


@pytest.mark.django_db
def test_views_of_any_month_ingest_accepts_are_stored_and_counted(blog_id, ingest_client, reader):
    now = timezone.now()
    accepted = [
        "1900-01-01T00:00:00Z",  # the first instant ingest takes: long before any partition
        "1950-06-15T12:00:00+02:00",
        (now - timedelta(days=5 * 366)).isoformat(),
        now.isoformat(),
        (now + timedelta(minutes=4)).isoformat(),  # ahead of the clock, maybe next month
    ]
    response = ingest_client.post(
        INGEST,
        {"views": [{"blog_id": blog_id, "country_code": "us", "viewed_at": at} for at in accepted]},
        format="json",
    )
    assert response.status_code == 202, response.content
    body = {"start_date": "1900-01-01", "end_date": "2100-12-31"}

    def counted() -> int:
        rows = reader(TOP_BLOG, body)["results"]
        return sum(row["views"] for row in rows)

    # Read from the raw tail, then from the summaries.
    assert counted() == 5
    rollups_absorb_pending()
    assert counted() == 5
    assert_summaries_exact()
    assert BlogView.objects.count() == 5
    if connection.vendor == "postgresql":
        first = BlogView.objects.order_by("viewed_at").first()
        assert first is not None and _partition_of(first.pk) == DEFAULT_PARTITION


@pytest.mark.django_db
def test_absorb_rebuild_and_the_tail_across_a_month_boundary(blog_id, reader):
    raw_partitions_ensure(months=[date(2025, 1, 1), date(2025, 2, 1)])
    last_of_january = datetime(2025, 1, 31, 23, 59, 59, 999999, tzinfo=UTC)
    first_of_february = datetime(2025, 2, 1, tzinfo=UTC)
    body = {"start_date": "2025-01-31", "end_date": "2025-02-01", "compare_period": "day"}

    def per_day() -> list[int]:
        return [row["views"] for row in reader(PERFORMANCE, body)["results"]]

    views_record(
        views=[
            (blog_id, "US", last_of_january),
            (blog_id, "DE", last_of_january - timedelta(hours=1)),
            (blog_id, "US", first_of_february),
        ]
    )
    assert per_day() == [2, 1]  # all of it from the tail
    if connection.vendor == "postgresql":
        assert [_partition_of(view[0]) for view in _stored()] == [
            "ingest_blogview_p2025_01",
            "ingest_blogview_p2025_01",
            "ingest_blogview_p2025_02",
        ]
    rollups_absorb_pending()
    absorbed = watermark()
    views_record(views=[(blog_id, "ET", first_of_february), (blog_id, "ET", last_of_january)])
    # Summaries for the first three, the tail (ids above the watermark) for the others.
    assert BlogView.objects.filter(id__gt=absorbed).count() == 2
    assert per_day() == [3, 2]
    rollups_absorb_pending()
    assert per_day() == [3, 2]
    assert_summaries_exact()

    BlogView.objects.filter(country_id="DE").delete()
    rollups_rebuild(start_date=date(2025, 1, 15), end_date=date(2025, 2, 15))
    assert per_day() == [2, 2]
    assert_summaries_exact()


# --- The migration path -------------------------------------------------------------------


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_migration_converts_a_plain_table_with_its_views_keeping_their_ids(
    django_user_model, auth_client, user
):
    author = django_user_model.objects.create_user(username="ada", password="x")
    blogs = [Blog.objects.create(title=f"Blog {n}", author=author).pk for n in range(3)]
    client = auth_client(user)
    now = timezone.now()
    migrate_to("ingest", "0002_idempotency_key")
    try:
        assert not raw_is_partitioned()
        months = [add_months(now.date().replace(day=1), -back) for back in (14, 3, 1, 0)]
        rows = [
            (blogs[n % 3], ("US", "DE", "ZZ")[n % 3], datetime(m.year, m.month, 1 + n, tzinfo=UTC))
            for m in months
            for n in range(10)
        ]
        rows.append((blogs[0], "US", datetime(1900, 1, 1, tzinfo=UTC)))
        views_record(views=rows)
        rollups_absorb_pending()
        views_record(views=rows[:7])  # still in the tail at the conversion
        before = _stored()
        bodies = [
            {"start_date": "1900-01-01"},
            {"year": months[0].year},
            {"start_date": months[1].isoformat(), "end_date": now.date().isoformat()},
        ]
        urls = [TOP_BLOG, "/api/analytics/blog-views/country/", "/api/analytics/top/user/"]

        def answers() -> list[object]:
            found = []
            for url in urls:
                for body in bodies:
                    response = client.post(url, body, format="json", HTTP_CACHE_CONTROL="no-cache")
                    assert response.status_code == 200
                    found.append(response.json()["results"])
            return found

        answered = answers()
        pending = watermark()
    finally:
        migrate_to("ingest")

    assert raw_is_partitioned()
    assert _stored() == before  # every view, with its id
    partitions = {partition.month for partition in raw_partitions()}
    assert set(months) <= partitions
    assert date(1900, 1, 1) not in partitions  # past the history window: the default partition
    assert answers() == answered
    # The id sequence goes on where it was: the watermark still splits summaries from tail.
    views_record(views=[(blogs[1], "US", now)])
    newest = BlogView.objects.order_by("-id").first()
    assert newest is not None and newest.pk > before[-1][0]
    assert watermark() == pending
    rollups_absorb_pending()
    assert_summaries_exact()
