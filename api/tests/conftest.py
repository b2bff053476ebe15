import random
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model

from core.models import Blog
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending

TODAY = datetime(2026, 1, 10, 15, 30, tzinfo=UTC)
COUNTRIES = ["US", "DE", "ET", "IN", "ZZ", "BR", "JP", "FR"]
# Code-point order differs from dictionary order: "Zed" < "ana_b" < "bob".
AUTHORS = ["Zed", "ana_b", "bob", "Ana"]
FIRST_DAY = datetime(2024, 1, 1, tzinfo=UTC)
# Every analytics read endpoint, in the API root's order.
ENDPOINTS = [
    "/api/analytics/blog-views/country/",
    "/api/analytics/blog-views/user/",
    "/api/analytics/top/blog/",
    "/api/analytics/top/user/",
    "/api/analytics/top/country/",
    "/api/analytics/performance/",
]


@pytest.fixture
def frozen_today():
    with time_machine.travel(TODAY, tick=False):
        yield TODAY


def analytics_data(
    *,
    seed: int,
    views: int = 2500,
    absorbed_at: datetime | None = None,
    absorbed_share: float = 0.8,
) -> list[int]:
    """Authors, blogs and views over 2024-2025, part absorbed and part still in the tail.

    ``absorbed_at``: the clock of the absorb, whose month is then the open one (its months and
    later ones only in the daily blog x country rows); by default, the frozen clock.
    ``absorbed_share``: the share of the views absorbed (the rest are the tail).
    """
    rng = random.Random(seed)
    authors = [get_user_model().objects.create_user(username=name) for name in AUTHORS]
    blogs = [
        Blog.objects.create(
            title=f"Blog {n}",
            author=authors[n % len(authors)],
            created_at=datetime(2023, 6, 1, tzinfo=UTC)
            + timedelta(days=rng.randrange(900), seconds=rng.randrange(86400)),
        )
        for n in range(12)
    ]
    weights = [1 / (rank + 1) for rank in range(len(blogs))]
    country_weights = [1 / (rank + 1) ** 0.7 for rank in range(len(COUNTRIES))]

    def batch(count: int, days: tuple[int, int]) -> list[tuple[int, str, datetime]]:
        return [
            (
                rng.choices(blogs, weights)[0].pk,
                rng.choices(COUNTRIES, country_weights)[0],
                FIRST_DAY + timedelta(days=rng.randint(*days), seconds=rng.randrange(86400)),
            )
            for _ in range(count)
        ]

    absorbed = int(views * absorbed_share)
    views_record(views=batch(absorbed, (0, 730)))
    if absorbed_at is None:
        rollups_absorb_pending()
    else:
        with time_machine.travel(absorbed_at, tick=False):
            rollups_absorb_pending()
    # The tail: new views and late ones for long-closed days, not absorbed yet.
    views_record(views=batch(views - absorbed, (0, 730)))
    return [blog.pk for blog in blogs]
