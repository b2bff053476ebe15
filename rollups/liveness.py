"""Is absorb still running? Beat sends it every ``ROLLUP_INTERVAL_SECONDS`` and a worker runs
it; each run, even one with nothing to absorb, stamps ``AbsorbState.last_run_at``. No run within
``LIVENESS_INTERVALS`` intervals means beat is gone, or every worker is."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from rollups.models import AbsorbState
from rollups.tables import STATE_NAME

LIVENESS_INTERVALS = 3


@dataclass(frozen=True)
class AbsorbLiveness:
    alive: bool
    last_run_at: datetime | None
    # Seconds since the last run finished (None: no run yet).
    age_seconds: float | None
    max_age_seconds: float


def absorb_liveness(*, now: datetime | None = None) -> AbsorbLiveness:
    """Whether an absorb run finished within the last ``LIVENESS_INTERVALS`` intervals."""
    now = now or timezone.now()
    max_age = LIVENESS_INTERVALS * settings.ROLLUP_INTERVAL_SECONDS
    last_run_at = (
        AbsorbState.objects.filter(name=STATE_NAME).values_list("last_run_at", flat=True).first()
    )
    if last_run_at is None:
        return AbsorbLiveness(False, None, None, max_age)
    age = max((now - last_run_at).total_seconds(), 0.0)
    return AbsorbLiveness(
        alive=now - last_run_at <= timedelta(seconds=max_age),
        last_run_at=last_run_at,
        age_seconds=round(age, 3),
        max_age_seconds=max_age,
    )
