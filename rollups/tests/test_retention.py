"""Raw-view retention (rollups.retention): whole months before the horizon go once the summaries
hold them, answers stay exact, and nothing rebuilds or audits those days any more."""

import random
from datetime import UTC, date, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client

from ingest.models import BlogView
from ingest.partitions import (
    DEFAULT_PARTITION,
    months_between,
    partition_name,
    raw_partitions,
    raw_partitions_ensure,
)
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending
from rollups.audit import rollups_verify
from rollups.models import AbsorbState, RebuildJob
from rollups.rebuild import RebuildBeforeHorizon, rollups_rebuild
from rollups.retention import raw_horizon, raw_retention_apply
from rollups.tables import STATE_NAME
from rollups.tests.recount import assert_summaries_exact, summaries_in_db

TODAY = datetime(2026, 1, 10, 12, tzinfo=UTC)
# With 12 months kept: from 2025-01-01 on (this month and the 12 before it).
HORIZON = date(2025, 1, 1)
OLD_MONTHS = [date(2024, 10, 1), date(2024, 11, 1), date(2024, 12, 1)]
KEPT_MONTHS = [date(2025, 1, 1), date(2025, 6, 1), date(2026, 1, 1)]
ENDPOINTS = [
    "/api/analytics/blog-views/country/",
    "/api/analytics/blog-views/user/",
    "/api/analytics/top/blog/",
    "/api/analytics/top/user/",
    "/api/analytics/top/country/",
    "/api/analytics/performance/",
]
# All time, the dropped months alone, a range across the horizon with partial months at both
# ends (daily rows), a year, and a country filter.
BODIES = [
    {},
    {"start_date": "2024-10-01", "end_date": "2024-12-31"},
    {"start_date": "2024-10-15", "end_date": "2025-01-20"},
    {"year": 2024, "country_codes": ["US", "DE"]},
    {"start_date": "2024-11-03", "end_date": "2024-11-03"},
]


def _views_in(month: date, count: int, blog_ids: list[int], rng: random.Random) -> list:
    days = 28 if month.month == 2 else 30
    return [
        (
            rng.choice(blog_ids),
            rng.choice(["US", "DE", "ET", "ZZ"]),
            datetime(month.year, month.month, 1, tzinfo=UTC)
            + timedelta(days=rng.randrange(days), seconds=rng.randrange(86_400)),
        )
        for _ in range(count)
    ]


@pytest.fixture
def history(blog_ids, settings):
    """Views in three months before the horizon and three after, all absorbed, at TODAY."""
    settings.RAW_RETENTION_MONTHS = 12
    with time_machine.travel(TODAY, tick=False):
        raw_partitions_ensure(months=months_between(OLD_MONTHS[0], KEPT_MONTHS[-1]))
        rng = random.Random(11)
        rows = []
        for month in OLD_MONTHS + KEPT_MONTHS:
            rows += _views_in(month, 40, blog_ids, rng)
        rows = [row for row in rows if row[2] < TODAY]
        views_record(views=rows)
        rollups_absorb_pending()
        yield blog_ids


@pytest.fixture
def ingest_client(auth_client, ingest_user):
    return auth_client(ingest_user)


@pytest.fixture
def answers(auth_client, user):
    client = auth_client(user)

    def read() -> list[object]:
        found = []
        for url in ENDPOINTS:
            for body in BODIES:
                response = client.post(url, body, format="json", HTTP_CACHE_CONTROL="no-cache")
                assert response.status_code == 200, response.content
                found.append((url, body, response.json()["results"], response.json()["meta"]))
        return [(url, body, rows, meta["total"]) for url, body, rows, meta in found]

    return read


def _raw_before_horizon() -> int:
    return BlogView.objects.filter(viewed_at__lt=datetime(2025, 1, 1, tzinfo=UTC)).count()


def _recorded() -> date | None:
    return AbsorbState.objects.get(name=STATE_NAME).raw_retained_from


def test_retention_drops_only_absorbed_whole_months_before_the_horizon(history, answers):
    late = datetime(2024, 11, 20, 8, tzinfo=UTC)
    views_record(views=[(history[0], "US", late)])  # not absorbed yet: only in the tail
    with time_machine.travel(TODAY, tick=False):
        before = answers()
        summaries = summaries_in_db()

        result = raw_retention_apply()

        assert result.horizon == HORIZON
        if connection.vendor == "postgresql":
            # Its partition holds a view above the watermark: November waits.
            assert result.months_dropped == [date(2024, 10, 1), date(2024, 12, 1)]
            assert list(result.months_kept) == [date(2024, 11, 1)]
            assert "not absorbed" in result.months_kept[date(2024, 11, 1)]
            assert _raw_before_horizon() == 41
        else:
            # SQLite deletes the absorbed views before the horizon, one by one.
            assert result.views_deleted == 120
            assert _raw_before_horizon() == 1
        assert answers() == before  # exact, from the summaries and the tail
        assert summaries_in_db() == summaries
        assert _recorded() == HORIZON

        rollups_absorb_pending()
        summaries = summaries_in_db()
        result = raw_retention_apply()

        assert _raw_before_horizon() == 0
        assert answers() == before
        assert summaries_in_db() == summaries
        # The months after the horizon keep every raw view: they rebuild exactly.
        rollups_rebuild(start_date=HORIZON, end_date=TODAY.date())
        assert summaries_in_db() == summaries
        assert answers() == before
    if connection.vendor == "postgresql":
        assert result.months_dropped == [date(2024, 11, 1)]
        months = {partition.month for partition in raw_partitions()}
        assert not months & set(OLD_MONTHS)
        assert set(KEPT_MONTHS) <= months
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s)", [partition_name(OLD_MONTHS[0])])
            assert cursor.fetchone()[0] is None  # dropped, not only detached


def test_retention_is_off_by_default(blog_ids, ingest_random):
    ingest_random(200)
    rollups_absorb_pending()
    result = raw_retention_apply()
    assert (result.horizon, result.months_dropped, result.views_deleted) == (None, [], 0)
    assert BlogView.objects.count() == 200
    assert raw_horizon() is None
    assert_summaries_exact()


def test_retention_waits_for_the_monthly_fold(history):
    # The monthly (blog, country) rows count the days before the open one only: raw views of
    # a month they do not cover yet stay.
    AbsorbState.objects.filter(name=STATE_NAME).update(monthly_open_from=date(2024, 12, 15))
    with time_machine.travel(TODAY, tick=False):
        result = raw_retention_apply()
    if connection.vendor == "postgresql":
        assert result.months_dropped == [date(2024, 10, 1), date(2024, 11, 1)]
        assert "2024-12-15" in result.months_kept[date(2024, 12, 1)]
    remaining = BlogView.objects.filter(viewed_at__lt=datetime(2025, 1, 1, tzinfo=UTC))
    assert remaining.exists()
    assert not remaining.filter(viewed_at__lt=datetime(2024, 12, 1, tzinfo=UTC)).exists()


def test_a_late_view_of_a_dropped_month_is_counted_then_pruned(history, answers, ingest_client):
    with time_machine.travel(TODAY, tick=False):
        raw_retention_apply()
        assert _raw_before_horizon() == 0
        before = {(url, str(body)): rows for url, body, rows, _ in answers()}
        response = ingest_client.post(
            "/api/ingest/views/",
            {"views": [{"blog_id": history[0], "country_code": "us", "viewed_at": "2024-10-05"
                        "T10:00:00Z"}]},
            format="json",
        )  # fmt: skip
        assert response.status_code == 202
        after = {(url, str(body)): rows for url, body, rows, _ in answers()}
        all_time = after[("/api/analytics/performance/", "{}")]
        october = next(row for row in all_time if row["label"] == "2024-10")
        before_october = next(
            row
            for row in before[("/api/analytics/performance/", "{}")]
            if row["label"] == "2024-10"
        )
        assert october["views"] == before_october["views"] + 1
        late = BlogView.objects.get(viewed_at=datetime(2024, 10, 5, 10, tzinfo=UTC))
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT tableoid::regclass::text FROM ingest_blogview WHERE id = %s",
                    [late.pk],
                )
                assert cursor.fetchone()[0] == DEFAULT_PARTITION
        raw_retention_apply()
        assert BlogView.objects.filter(pk=late.pk).exists()  # not absorbed: kept
        rollups_absorb_pending()
        result = raw_retention_apply()
        assert result.views_deleted == 1
        assert _raw_before_horizon() == 0
        assert {(url, str(body)): rows for url, body, rows, _ in answers()} == after


# --- Rebuilds and audits stop at the horizon ----------------------------------------------


@pytest.fixture
def staff_client(auth_client, staff_user):
    return auth_client(staff_user)


def test_a_rebuild_before_the_horizon_is_a_400_naming_it(history, staff_client):
    with time_machine.travel(TODAY, tick=False):
        for body in (
            {"start_date": "2024-12-01", "end_date": "2025-01-31"},
            {"end_date": "2025-03-31"},
            {},
        ):
            response = staff_client.post("/api/rollups/rebuild/", body, format="json")
            assert response.status_code == 400, body
            [detail] = response.json()["error"]["details"]
            assert detail["field"] == "start_date"
            assert "2025-01-01" in detail["reason"]
            assert "RAW_RETENTION_MONTHS=12" in detail["reason"]
        assert not RebuildJob.objects.exists()
        accepted = staff_client.post(
            "/api/rollups/rebuild/", {"start_date": "2025-01-01"}, format="json"
        )
        assert accepted.status_code == 202


def test_the_command_and_the_admin_refuse_a_rebuild_before_the_horizon(history, django_user_model):
    with time_machine.travel(TODAY, tick=False):
        for args in (["--start-date", "2024-11-01"], []):
            with pytest.raises(CommandError, match="2025-01-01") as refused:
                call_command("rebuild_rollups", *args, stdout=StringIO(), stderr=StringIO())
            assert "RAW_RETENTION_MONTHS=12" in str(refused.value)
        admin = django_user_model.objects.create_superuser(username="root", password="x")
        client = Client()
        client.force_login(admin)
        page = client.post(
            "/admin/rollups/rebuildjob/add/",
            {"start_date": "2024-12-01", "end_date": "2025-01-31"},
        )
        assert page.status_code == 200
        assert b"is before 2025-01-01" in page.content
        assert not RebuildJob.objects.exists()
        with pytest.raises(RebuildBeforeHorizon):
            rollups_rebuild(start_date=date(2024, 12, 31), end_date=date(2025, 1, 2))


def test_the_horizon_holds_once_raw_views_are_gone_even_with_retention_off(history, settings):
    with time_machine.travel(TODAY, tick=False):
        raw_retention_apply()
    settings.RAW_RETENTION_MONTHS = 0
    horizon = raw_horizon()
    assert horizon is not None and horizon.day == HORIZON
    assert "were dropped" in horizon.reason
    with pytest.raises(RebuildBeforeHorizon, match="were dropped"):
        rollups_rebuild(start_date=date(2024, 1, 1), end_date=date(2025, 2, 1))


def test_a_rebuild_that_raw_views_vanish_under_changes_nothing(history, settings):
    """Retention turned on while a rebuild of the old months stages their raw views: its swap
    finds the horizon recorded and fails instead of writing partial sums."""
    settings.RAW_RETENTION_MONTHS = 0
    summaries = summaries_in_db()

    def retention_meanwhile(fraction: float) -> None:
        if fraction <= 0.9 and settings.RAW_RETENTION_MONTHS == 0:
            settings.RAW_RETENTION_MONTHS = 12
            assert raw_retention_apply().horizon == HORIZON

    with (
        time_machine.travel(TODAY, tick=False),
        pytest.raises(RebuildBeforeHorizon, match="while this rebuild ran"),
    ):
        rollups_rebuild(
            start_date=date(2024, 10, 1), end_date=date(2025, 6, 30), progress=retention_meanwhile
        )
    assert summaries_in_db() == summaries


def test_the_audit_skips_or_refuses_days_before_the_horizon(history):
    with time_machine.travel(TODAY, tick=False):
        raw_retention_apply()
        audit = rollups_verify(days=[date(2024, 10, 5), date(2025, 6, 5)])
        assert audit.audit.days == ["2025-06-05"]
        assert audit.drifts == []
        with pytest.raises(CommandError, match="before 2025-01-01"):
            call_command(
                "verify_rollups",
                "--start-date",
                "2024-10-01",
                "--end-date",
                "2025-01-31",
                stdout=StringIO(),
            )
        out = StringIO()
        call_command("verify_rollups", "--days", "500", "--all", stdout=out)
        assert "Auditing from 2025-01-01" in out.getvalue()
        assert "No drift." in out.getvalue()
