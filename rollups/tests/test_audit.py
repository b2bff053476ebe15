"""The drift audit finds every summary group that differs from the raw views, and only those."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from core.metrics import metrics_text
from rollups.absorb import rollups_absorb_pending
from rollups.audit import audit_days_sample, audit_repair, drift_ranges, rollups_verify
from rollups.jobs import rebuild_job_run
from rollups.models import (
    DailyBlogCountryViews,
    DailyBlogViews,
    RebuildJob,
    RollupAudit,
)

from .conftest import FIRST_DAY

DAY0 = FIRST_DAY.date()
# The first 20 days of 2024: every one has views.
DAYS = [DAY0 + timedelta(days=n) for n in range(20)]


@pytest.fixture
def absorbed(ingest_random) -> None:
    ingest_random(600, days=(0, 19))
    rollups_absorb_pending()


def _corrupt() -> tuple[DailyBlogCountryViews, DailyBlogCountryViews]:
    """Add 5 views to one (day, blog, country) row and delete another, as a bug or a careless
    hand edit would; return both as they were."""
    rows = list(DailyBlogCountryViews.objects.filter(day__in=DAYS[:3]).order_by("day", "id"))
    inflated, deleted = rows[0], rows[-1]
    DailyBlogCountryViews.objects.filter(pk=inflated.pk).update(views=inflated.views + 5)
    DailyBlogCountryViews.objects.filter(pk=deleted.pk).delete()
    return inflated, deleted


def _blog_country_drifts(result) -> set[tuple[date, int | None, str | None, int, int]]:
    return {
        (d.day, d.blog_id, d.country_id, d.expected, d.found)
        for d in result.drifts
        if d.table == DailyBlogCountryViews._meta.db_table
    }


def test_no_drift_when_the_summaries_match(absorbed) -> None:
    result = rollups_verify(days=DAYS)

    assert result.drifts == []
    assert result.audit.drift_groups == 0
    assert result.audit.views_recounted == 600


def test_a_corrupted_row_and_a_missing_one_are_reported_exactly(absorbed) -> None:
    inflated, deleted = _corrupt()

    result = rollups_verify(days=DAYS)

    assert _blog_country_drifts(result) == {
        (inflated.day, inflated.blog_id, inflated.country_id, inflated.views, inflated.views + 5),
        (deleted.day, deleted.blog_id, deleted.country_id, deleted.views, 0),
    }
    # The coarser daily levels were not touched: only the hand-edited groups differ.
    assert len(result.drifts) == 2
    audit = RollupAudit.objects.get()
    assert audit.drift_groups == 2
    assert audit.drift_days == sorted({inflated.day.isoformat(), deleted.day.isoformat()})


def test_a_row_of_another_level_and_a_row_without_views_are_reported(absorbed, blog_ids) -> None:
    row = DailyBlogViews.objects.filter(day=DAYS[4]).first()
    assert row is not None
    DailyBlogViews.objects.filter(pk=row.pk).update(views=row.views - 1)
    # A (day, blog, country) group that has no raw view at all.
    DailyBlogCountryViews.objects.create(day=DAYS[5], blog_id=blog_ids[0], country_id="FR", views=3)

    result = rollups_verify(days=DAYS)

    found = {(d.table, d.day, d.blog_id, d.country_id, d.expected, d.found) for d in result.drifts}
    assert found == {
        (DailyBlogViews._meta.db_table, DAYS[4], row.blog_id, None, row.views, row.views - 1),
        (DailyBlogCountryViews._meta.db_table, DAYS[5], blog_ids[0], "FR", 0, 3),
    }


def test_views_not_absorbed_yet_are_not_drift(absorbed, ingest_random) -> None:
    # The tail (ids above the watermark) is in no summary by design.
    ingest_random(80, days=(0, 19), rng=random.Random(99))

    assert rollups_verify(days=DAYS).drifts == []


def test_repair_rebuilds_the_drifting_days(absorbed, django_capture_on_commit_callbacks) -> None:
    inflated, deleted = _corrupt()
    audit = rollups_verify(days=DAYS).audit

    with django_capture_on_commit_callbacks(execute=False):
        job_ids = audit_repair(audit=audit)

    jobs = RebuildJob.objects.filter(id__in=job_ids).order_by("start_date")
    assert [(job.start_date, job.end_date) for job in jobs] == drift_ranges(
        [inflated.day, deleted.day]
    )
    audit.refresh_from_db()
    assert audit.repair_jobs == job_ids
    for job_id in job_ids:
        assert rebuild_job_run(job_id=job_id).state == RebuildJob.State.DONE
    assert rollups_verify(days=DAYS).drifts == []


def test_drift_shows_in_the_metrics_and_the_status(absorbed, auth_client, staff_user) -> None:
    _corrupt()
    rollups_verify(days=DAYS)

    text = metrics_text().decode()
    assert "blogviews_rollups_drift_groups 2.0" in text
    body = auth_client(staff_user).get("/api/rollups/status/").json()
    assert body["last_audit"]["drift_groups"] == 2
    assert len(body["last_audit"]["drifts"]) == 2


def test_the_command_reports_drift_and_repairs_it(
    absorbed, capsys, django_capture_on_commit_callbacks
) -> None:
    inflated, _ = _corrupt()
    args = ["--start-date", DAYS[0].isoformat(), "--end-date", DAYS[-1].isoformat(), "--all"]

    with pytest.raises(CommandError, match="2 summary group"):
        call_command("verify_rollups", *args)
    out = capsys.readouterr().out
    assert f"DRIFT {inflated.day}" in out
    assert RebuildJob.objects.count() == 0

    with django_capture_on_commit_callbacks(execute=False), pytest.raises(CommandError):
        call_command("verify_rollups", *args, "--repair")
    assert "Queued rebuild job(s)" in capsys.readouterr().out
    for job in RebuildJob.objects.all():
        rebuild_job_run(job_id=str(job.pk))

    call_command("verify_rollups", *args)
    assert "No drift." in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "3", "--start-date", "2024-01-01"], "not both"),
        (["--start-date", "2024-01-01"], "both --start-date and --end-date"),
        (["--start-date", "2024-02-01", "--end-date", "2024-01-01"], "after"),
        (["--days", "0"], "at least 1"),
        (["--start-date", "2024-13-01", "--end-date", "2024-01-01"], "not a date"),
    ],
)
def test_the_command_refuses_bad_ranges(db, args, message) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("verify_rollups", *args)


def test_the_sample_holds_yesterday_each_month_start_and_random_days() -> None:
    with time_machine.travel(datetime(2024, 3, 20, 12, tzinfo=UTC), tick=False):
        days = audit_days_sample(
            start=date(2024, 1, 10), end=date(2024, 3, 31), random_days=4, rng=random.Random(1)
        )

    fixed = {date(2024, 3, 19), date(2024, 2, 1), date(2024, 3, 1)}
    assert fixed <= set(days)
    assert len(days) == len(fixed) + 4
    assert days == sorted(days)
    assert all(date(2024, 1, 10) <= day <= date(2024, 3, 31) for day in days)
    # Fewer days in range than asked for: every one of them.
    assert audit_days_sample(start=date(2024, 1, 1), end=date(2024, 1, 3), random_days=9) == [
        date(2024, 1, 1),
        date(2024, 1, 2),
        date(2024, 1, 3),
    ]


def test_the_admin_action_queues_the_repair(
    absorbed, client, django_user_model, django_capture_on_commit_callbacks
) -> None:
    _corrupt()
    audit = rollups_verify(days=DAYS).audit
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)

    with django_capture_on_commit_callbacks(execute=False):
        response = client.post(
            reverse("admin:rollups_rollupaudit_changelist"),
            {"action": "rebuild_drifting_days", "_selected_action": [audit.pk]},
        )

    assert response.status_code == 302
    audit.refresh_from_db()
    assert len(audit.repair_jobs) >= 1
    assert RebuildJob.objects.count() == len(audit.repair_jobs)
    page = client.get(reverse("admin:rollups_rollupaudit_change", args=[audit.pk]))
    assert page.status_code == 200
