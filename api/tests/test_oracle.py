"""Every endpoint against an independent recount from raw, over random data and filters."""

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from api.tests import oracle
from api.tests.conftest import AUTHORS, COUNTRIES, TODAY, analytics_data


def _random_dates(rng: random.Random) -> dict[str, Any]:
    def day() -> date:
        # Month edges often, to exercise whole-month / edge-day splits.
        picked = date(2023, 11, 1) + timedelta(days=rng.randrange(820))
        return rng.choice(
            [
                picked,
                picked.replace(day=1),
                (picked.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1),
            ]
        )

    kind = rng.choice(["none", "year", "start", "end", "both", "both", "both"])
    if kind == "year":
        return {"year": rng.choice([2023, 2024, 2025, 2026])}
    if kind == "start":
        return {"start_date": day().isoformat()}
    if kind == "end":
        return {"end_date": day().isoformat()}
    if kind == "both":
        first, second = sorted([day(), day()])
        return {"start_date": first.isoformat(), "end_date": second.isoformat()}
    return {}


def _random_filters(rng: random.Random) -> dict[str, Any]:
    body = _random_dates(rng)
    if rng.random() < 0.35:
        body["country_codes"] = [
            code if rng.random() < 0.7 else code.lower()
            for code in rng.sample(COUNTRIES, rng.randint(1, 4))
        ]
    if rng.random() < 0.35:
        body["exclude_country_codes"] = rng.sample(COUNTRIES, rng.randint(1, 3))
    if rng.random() < 0.3:
        body["author_username"] = rng.choice([*AUTHORS, "nobody"])
    return body


@pytest.fixture
def client(db, frozen_today, settings) -> APIClient:
    settings.ANALYTICS_PUBLIC_READ = True
    settings.ANALYTICS_CACHE_SECONDS = 0
    return APIClient()


def _post(client: APIClient, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, body, format="json")
    assert response.status_code == 200, (body, response.content)
    return response.json()


@pytest.mark.parametrize(
    ("seed", "absorbed_at"),
    [
        (1, None),
        # The open month mid-2025: blog x country questions read its months from daily rows.
        (2, datetime(2025, 6, 20, tzinfo=UTC)),
    ],
)
def test_every_endpoint_matches_a_recount_from_raw(client, seed, absorbed_at):
    analytics_data(seed=seed, absorbed_at=absorbed_at)
    rng = random.Random(seed * 1000)
    for _ in range(30):
        body = _random_filters(rng)

        grouped = {
            **body,
            "limit": rng.choice([1, 3, 100, 1000]),
            "offset": rng.choice([0, 0, 2, 9]),
        }
        for kind, expected in (
            ("country", oracle.by_country(body)),
            ("user", oracle.by_author(body)),
        ):
            answer = _post(client, f"/api/analytics/blog-views/{kind}/", grouped)
            page = expected[grouped["offset"] : grouped["offset"] + grouped["limit"]]
            assert answer["results"] == page, (kind, grouped)
            assert answer["meta"]["total"] == len(expected), (kind, grouped)

        top = {**body, "limit": rng.choice([1, 3, 10, 100])}
        for kind, expected in (
            ("blog", oracle.top_blogs(body)),
            ("user", oracle.by_author(body)),
            ("country", oracle.by_country(body)),
        ):
            answer = _post(client, f"/api/analytics/top/{kind}/", top)
            assert answer["results"] == expected[: top["limit"]], (kind, top)
            assert answer["meta"]["total"] == len(expected), (kind, top)

        series = {**body}
        if rng.random() < 0.6:
            series["compare_period"] = rng.choice(["day", "week", "month", "year"])
        try:
            expected = oracle.performance(series, today=TODAY.date())
        except oracle.Rejected:
            response = client.post("/api/analytics/performance/", series, format="json")
            assert response.status_code == 400, series
            assert response.json()["error"]["details"][0]["field"] == "compare_period"
        else:
            answer = _post(client, "/api/analytics/performance/", series)
            assert answer["results"] == expected, series
