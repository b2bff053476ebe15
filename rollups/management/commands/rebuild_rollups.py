import sys
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from rollups.rebuild import (
    REBUILD_FIRST_DAY,
    REBUILD_LAST_DAY,
    rebuild_range_errors,
    rollups_rebuild,
)


def day_argument(value: str) -> date:
    """A command's date option (YYYY-MM-DD), or a CommandError naming it (also verify_rollups)."""
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"'{value}' is not a date (YYYY-MM-DD).") from exc


class Command(BaseCommand):
    help = (
        "Recompute the summaries of a date range (inclusive, UTC days) from the raw views. "
        "Ingest and absorb go on meanwhile; the range switches to the new numbers at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--start-date",
            type=day_argument,
            help=f"first day, from {REBUILD_FIRST_DAY} (default: earliest data)",
        )
        parser.add_argument(
            "--end-date",
            type=day_argument,
            help=f"last day, to {REBUILD_LAST_DAY} (default: latest data)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        start, end = options["start_date"], options["end_date"]
        errors = rebuild_range_errors(start_date=start, end_date=end)
        if errors:
            raise CommandError(
                " ".join(
                    f"--{field.replace('_', '-')} {reason.replace('end_date', '--end-date')}."
                    for field, reason in errors.items()
                )
            )
        with tqdm(total=100, unit="%", file=sys.stderr, disable=None) as bar:

            def progress(fraction: float) -> None:
                bar.update(round(fraction * 100) - bar.n)

            result = rollups_rebuild(start_date=start, end_date=end, progress=progress)
        if result.start_date is None:
            self.stdout.write("Nothing to rebuild: no views and no summaries in that range.")
            return
        self.stdout.write(
            f"Rebuilt {result.start_date} to {result.end_date} from {result.views:,} views "
            f"in {result.duration_ms / 1000:.1f} s."
        )
