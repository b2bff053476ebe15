import random
from datetime import UTC, timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from core.exceptions import ApplicationError
from rollups.audit import audit_days_sample, audit_repair, rollups_verify
from rollups.management.commands.rebuild_rollups import day_argument
from rollups.rebuild import REBUILD_FIRST_DAY, REBUILD_LAST_DAY
from rollups.retention import raw_horizon


class Command(BaseCommand):
    help = (
        "Recount a sample of days from the raw views (yesterday, the first day of each month in "
        "range, and random ones) and report every daily summary group that differs. Exits 1 "
        "when any does; --repair queues a rebuild of the drifting days."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="the N days ending yesterday (UTC) (default: AUDIT_RANGE_DAYS)",
        )
        parser.add_argument(
            "--start-date", type=day_argument, default=None, help="first day, YYYY-MM-DD"
        )
        parser.add_argument(
            "--end-date", type=day_argument, default=None, help="last day, YYYY-MM-DD"
        )
        parser.add_argument(
            "--random",
            type=int,
            default=None,
            help="random days recounted beside the fixed ones (default: AUDIT_RANDOM_DAYS)",
        )
        parser.add_argument("--all", action="store_true", help="recount every day of the range")
        parser.add_argument("--seed", type=int, default=None, help="random seed for the sample")
        parser.add_argument(
            "--repair", action="store_true", help="queue a rebuild of the drifting days"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        yesterday = timezone.now().astimezone(UTC).date() - timedelta(days=1)
        start, end = options["start_date"], options["end_date"]
        if options["days"] is not None and (start or end):
            raise CommandError("Give --days or --start-date/--end-date, not both.")
        if start is None and end is None:
            span = options["days"] if options["days"] is not None else settings.AUDIT_RANGE_DAYS
            if span < 1:
                raise CommandError("--days must be at least 1.")
            start, end = yesterday - timedelta(days=span - 1), yesterday
        elif start is None or end is None:
            raise CommandError("Give both --start-date and --end-date.")
        if start > end:
            raise CommandError("--start-date is after --end-date.")
        if start < REBUILD_FIRST_DAY or end > REBUILD_LAST_DAY:
            raise CommandError(f"Days must be within {REBUILD_FIRST_DAY}..{REBUILD_LAST_DAY}.")
        horizon = raw_horizon()
        if horizon is not None and start < horizon.day:
            if options["start_date"] is not None:
                raise CommandError(
                    f"--start-date {start} is before {horizon.day}: {horizon.reason}, so the "
                    "days before it cannot be audited (no raw views to recount them from)."
                )
            self.stdout.write(
                f"Auditing from {horizon.day}, not {start}: {horizon.reason} (no raw views "
                "to recount the days before it from)."
            )
            start = horizon.day
            if start > end:
                self.stdout.write("No day to audit.")
                return
        if options["all"]:
            days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
        else:
            count = options["random"] if options["random"] is not None else None
            days = audit_days_sample(
                start=start,
                end=end,
                random_days=settings.AUDIT_RANDOM_DAYS if count is None else count,
                rng=random.Random(options["seed"]),
            )
        result = rollups_verify(days=days)
        audit = result.audit
        self.stdout.write(
            f"Audit {audit.pk}: recounted {len(days)} day(s) ({audit.views_recounted:,} views "
            f"through id {audit.absorbed_through_id}) in "
            f"{(audit.finished_at - audit.started_at).total_seconds():.3f} s."
        )
        for drift in result.drifts:
            self.stdout.write(
                f"  DRIFT {drift.day} {drift.table} blog={drift.blog_id} "
                f"country={drift.country_id}: expected {drift.expected}, found {drift.found}"
            )
        if not result.drifts:
            self.stdout.write("No drift.")
            return
        if options["repair"]:
            try:
                job_ids = audit_repair(audit=audit)
            except ApplicationError as error:
                raise CommandError(f"Repair not queued: {error.message}") from error
            self.stdout.write(f"Queued rebuild job(s): {', '.join(job_ids)}.")
        raise CommandError(
            f"{len(result.drifts)} summary group(s) on {len(audit.drift_days)} day(s) differ "
            "from the raw views."
            + ("" if options["repair"] else " Run again with --repair to rebuild those days.")
        )
