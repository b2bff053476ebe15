from typing import Any

from django.core.management.base import BaseCommand

from rollups.absorb import rollups_absorb_pending


class Command(BaseCommand):
    help = "Absorb every raw view pending now into the summaries, synchronously (what beat does)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = rollups_absorb_pending()
        self.stdout.write(
            f"Absorbed {result.views:,} views in {result.duration_ms} ms; summaries now hold "
            f"every view through id {result.absorbed_through_id}."
        )
