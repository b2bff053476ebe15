from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from rollups.liveness import LIVENESS_INTERVALS, absorb_liveness

# The beat schedule entry whose sends prove beat alive (worker/celery.py).
ABSORB_ENTRY = "absorb pending views"


class Command(BaseCommand):
    help = (
        "Exit 0 when alive, 1 (saying why) when not: 'absorb' = an absorb run finished within "
        "three ROLLUP_INTERVAL_SECONDS (beat and a worker both work); 'beat' = beat sent the "
        "absorb task within three intervals. For container healthchecks and monitors."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("what", choices=["absorb", "beat"])

    def handle(self, *args: Any, **options: Any) -> None:
        if options["what"] == "absorb":
            liveness = absorb_liveness()
            if not liveness.alive:
                age = (
                    "never" if liveness.age_seconds is None else f"{liveness.age_seconds:.0f} s ago"
                )
                raise CommandError(
                    f"No absorb run finished within {liveness.max_age_seconds:g} s (last: {age})."
                )
            self.stdout.write(f"absorb alive: last run {liveness.age_seconds:.0f} s ago")
            return
        from django_celery_beat.models import PeriodicTask

        max_age = timedelta(seconds=LIVENESS_INTERVALS * settings.ROLLUP_INTERVAL_SECONDS)
        last = (
            PeriodicTask.objects.filter(name=ABSORB_ENTRY)
            .values_list("last_run_at", flat=True)
            .first()
        )
        if last is None or timezone.now() - last > max_age:
            raise CommandError(
                f"Beat has not sent {ABSORB_ENTRY!r} within {max_age.total_seconds():g} s "
                f"(last: {last or 'never'})."
            )
        self.stdout.write(
            f"beat alive: last sent {(timezone.now() - last).total_seconds():.0f} s ago"
        )
