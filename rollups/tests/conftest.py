import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model

from core.models import Blog
from ingest.services import views_record

COUNTRIES = ["US", "DE", "ET", "IN", "ZZ", "BR", "JP"]
# Two years of days, both ends included, crossing a leap day and month and year ends.
FIRST_DAY = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 731


@pytest.fixture
def blog_ids(db) -> list[int]:
    authors = [
        get_user_model().objects.create_user(username=f"author{n}", password="x") for n in range(3)
    ]
    return [Blog.objects.create(title=f"Blog {n}", author=authors[n % 3]).pk for n in range(6)]


@pytest.fixture
def ingest_random(blog_ids) -> Callable[..., int]:
    """``ingest_random(count, rng=..., days=(lo, hi))``: record random views; return how many."""

    def ingest(
        count: int, *, rng: random.Random | None = None, days: tuple[int, int] = (0, DAYS - 1)
    ) -> int:
        rng = rng or random.Random(count)
        rows = [
            (
                rng.choice(blog_ids),
                rng.choice(COUNTRIES),
                FIRST_DAY + timedelta(days=rng.randint(*days), seconds=rng.randrange(86_400)),
            )
            for _ in range(count)
        ]
        return views_record(views=rows)

    return ingest


@pytest.fixture
def trailing_sleeps(ingest_random, monkeypatch) -> list[float]:
    """Absorb's trailing waits, recorded instead of slept; each one ingests 5 views meanwhile."""
    from rollups import services

    slept: list[float] = []

    def sleep_while_views_arrive(seconds: float) -> None:
        slept.append(seconds)
        ingest_random(5, rng=random.Random(len(slept)))

    monkeypatch.setattr(services.time, "sleep", sleep_while_views_arrive)
    return slept
