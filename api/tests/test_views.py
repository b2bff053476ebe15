import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import time_machine
from django.db import connection
from django.test import override_settings
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from api import selectors
from api.caching import answer_cached
from api.selectors import country_breakdown
from api.spec import TOP, Spec, spec_parse
from api.tests.conftest import ENDPOINTS, TODAY, analytics_data
from ingest.models import BlogView
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending
from rollups.rebuild import rollups_rebuild
from rollups.selectors import rebuild_version, rebuild_version_cached

SEED_CALLS = [
    ("/api/analytics/blog-views/country/", {"year": 2024, "exclude_country_codes": ["US"]}),
    ("/api/analytics/top/blog/", {}),
    ("/api/analytics/performance/", {"year": 2023, "compare_period": "week"}),
]


@pytest.fixture
def public(db, settings, frozen_today) -> APIClient:
    settings.ANALYTICS_PUBLIC_READ = True
    return APIClient()


@pytest.fixture
def data(db):
    return analytics_data(seed=3, views=600)


def _error(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    return response.json()["error"]


@pytest.mark.parametrize(("url", "body"), SEED_CALLS)
def test_the_seed_readme_calls_work_verbatim(public, data, url, body):
    response = public.post(url, body, format="json")
    assert response.status_code == 200
    answer = response.json()
    assert set(answer) == {"results", "meta"}
    assert {"filters", "total", "as_of", "cached"} <= set(answer["meta"])


def test_seed_weekly_series_of_2023_is_53_clipped_iso_weeks(public, data):
    answer = public.post(SEED_CALLS[2][0], SEED_CALLS[2][1], format="json").json()
    rows = answer["results"]
    assert (rows[0]["label"], rows[0]["period_start"], rows[0]["period_end"]) == (
        "2022-W52",
        "2023-01-01",
        "2023-01-01",
    )
    assert (rows[-1]["label"], rows[-1]["period_end"]) == ("2023-W52", "2023-12-31")
    assert len(rows) == 53
    assert answer["meta"]["granularity"] == "week"
    assert answer["meta"]["granularity_auto"] is False


def test_automatic_granularity(public, data):
    def period(body: dict[str, Any]) -> tuple[str, bool]:
        meta = public.post("/api/analytics/performance/", body, format="json").json()["meta"]
        return meta["granularity"], meta["granularity_auto"]

    assert period({"start_date": "2024-01-01", "end_date": "2024-01-31"}) == ("day", True)
    assert period({"start_date": "2024-01-01", "end_date": "2024-02-01"}) == ("week", True)
    assert period({"start_date": "2024-01-01", "end_date": "2024-06-28"}) == ("week", True)
    assert period({"start_date": "2024-01-01", "end_date": "2024-06-29"}) == ("month", True)
    # Up to 1,000 months stay months; past them, years.
    assert period({"start_date": "1942-09-01", "end_date": "2025-12-31"}) == ("month", True)
    assert period({"start_date": "1942-08-31", "end_date": "2025-12-31"}) == ("year", True)


def test_one_view_dated_1900_makes_the_automatic_series_yearly(public, data):
    """An open start reaching back to the earliest view: no 400 for everyone, but years."""
    views_record(views=[(data[0], "US", datetime(1900, 1, 1, tzinfo=UTC))])
    answer = public.post("/api/analytics/performance/", {}, format="json").json()
    assert (answer["meta"]["granularity"], answer["meta"]["granularity_auto"]) == ("year", True)
    rows = answer["results"]
    assert len(rows) == 2026 - 1900 + 1
    assert rows[0] == {
        "period_start": "1900-01-01",
        "period_end": "1900-12-31",
        "label": "1900",
        "blogs_created": 0,
        "views": 1,
        "growth_pct": None,
    }
    assert rows[-1]["period_end"] == TODAY.date().isoformat()
    assert sum(row["views"] for row in rows) == BlogView.objects.count()
    # An explicit bucket size that gives more than 1,000 buckets is still a 400.
    error = _error(
        public.post("/api/analytics/performance/", {"compare_period": "month"}, format="json")
    )
    assert error["details"][0]["field"] == "compare_period"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"year": "2024"}, "year"),
        ({"year": 1899}, "year"),
        ({"year": 2101}, "year"),
        ({"year": True}, "year"),
        ({"year": 2024, "start_date": "2024-01-01"}, "year"),
        ({"start_date": "2024-13-01"}, "start_date"),
        ({"start_date": "2024-1-1"}, "start_date"),
        ({"start_date": "2025-W01-1"}, "start_date"),  # an ISO week date
        ({"end_date": "2024-01-0\u0661"}, "end_date"),  # an Arabic-Indic digit
        ({"end_date": 20240101}, "end_date"),
        ({"start_date": "2024-02-01", "end_date": "2024-01-31"}, "start_date"),
        ({"country_codes": []}, "country_codes"),
        ({"country_codes": "US"}, "country_codes"),
        ({"country_codes": ["US", "XX"]}, "country_codes"),
        ({"country_codes": [1]}, "country_codes"),
        ({"country_codes": ["\u00df"]}, "country_codes"),  # upper-cases to "SS"
        ({"exclude_country_codes": ["\u0131t"]}, "exclude_country_codes"),  # to "IT"
        ({"exclude_country_codes": ["USA"]}, "exclude_country_codes"),
        ({"exclude_country_codes": ["US"] * 251}, "exclude_country_codes"),
        ({"author_username": 5}, "author_username"),
        ({"author_username": ""}, "author_username"),
        ({"granularity": "week"}, "granularity"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "10"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 1_000_001}, "offset"),
        ({"author_username": "a" * 151}, "author_username"),
        ({"author_username": "a" * 7 * 1024 * 1024}, "author_username"),
        ({"start_date": "1899-12-31"}, "start_date"),
        ({"end_date": "9999-12-31"}, "end_date"),
        ({"start_date": "0001-01-01"}, "start_date"),
        ({"start_date": "2101-01-01"}, "start_date"),
    ],
)
def test_bad_filters_are_400_naming_the_field(public, body, field):
    error = _error(public.post("/api/analytics/blog-views/user/", body, format="json"))
    assert field in [d["field"] for d in error["details"]], error
    assert field in error["message"]


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/analytics/top/blog/", {"limit": 101}, "limit"),
        ("/api/analytics/top/blog/", {"offset": 0}, "offset"),
        ("/api/analytics/performance/", {"compare_period": "quarter"}, "compare_period"),
        ("/api/analytics/performance/", {"limit": 5}, "limit"),
        (
            "/api/analytics/performance/",
            {"start_date": "2020-01-01", "compare_period": "day"},
            "compare_period",
        ),
    ],
)
def test_endpoint_options(public, data, url, body, field):
    error = _error(public.post(url, body, format="json"))
    assert error["details"][0]["field"] == field


@pytest.mark.parametrize("raw", ["[]", '"x"', "3", "{bad json"])
def test_a_body_that_is_not_an_object_is_400(public, raw):
    response = public.generic(
        "POST", "/api/analytics/top/blog/", raw, content_type="application/json"
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("url", "valid"),
    [
        ("/api/analytics/blog-views/blog/", "country, user"),
        ("/api/analytics/top/author/", "blog, user, country"),
    ],
)
def test_unknown_path_type_is_404_listing_the_valid_ones(public, url, valid):
    response = public.post(url, {}, format="json")
    assert response.status_code == 404
    assert valid in response.json()["error"]["message"]


@pytest.mark.parametrize("url", ENDPOINTS)
@pytest.mark.parametrize("field", ["start_date", "end_date"])
def test_a_date_outside_the_range_is_400_on_every_endpoint(public, url, field):
    error = _error(public.post(url, {field: "9999-12-31"}, format="json"))
    assert error["details"] == [
        {"field": field, "reason": "9999-12-31 is outside 1900-01-01..2100-12-31"}
    ]


def test_the_longest_username_is_a_filter_and_a_longer_one_is_not_echoed(public, data, caplog):
    longest = public.post(ENDPOINTS[0], {"author_username": "a" * 150}, format="json")
    assert longest.status_code == 200
    assert longest.json()["results"] == []
    response = public.post(ENDPOINTS[0], {"author_username": "a" * 100_000}, format="json")
    assert len(response.content) < 1000
    assert _error(response)["details"] == [
        {"field": "author_username", "reason": "must be at most 150 characters; got 100000"}
    ]


def test_the_deepest_offset_answers(public, data):
    answer = public.post(ENDPOINTS[1], {"offset": 1_000_000}, format="json").json()
    assert answer["results"] == [] and answer["meta"]["total"] == 4


def test_unknown_author_gives_empty_results(public, data):
    for url in ENDPOINTS:
        answer = public.post(url, {"author_username": "nobody", "year": 2024}, format="json").json()
        assert answer["results"] == [] and answer["meta"]["total"] == 0, url


def test_meta_echoes_normalized_filters(public, data):
    body = {"start_date": "2024-02-01", "country_codes": ["us", "de", "US"]}
    meta = public.post("/api/analytics/top/country/", body, format="json").json()["meta"]
    assert meta["filters"] == {
        "start_date": "2024-02-01",
        "end_date": None,
        "year": None,
        "country_codes": ["DE", "US"],
        "exclude_country_codes": None,
        "author_username": None,
        "limit": 10,
        "compare": None,
    }
    assert meta["compare"] is None
    assert meta["as_of"] == "2026-01-10T15:30:00Z"


def test_api_root_lists_the_endpoints(db):
    answer = APIClient().get("/api/analytics/").json()
    urls = [*ENDPOINTS, "/api/analytics/realtime/"]
    assert [e["url"] for e in answer["endpoints"]] == [f"http://testserver{u}" for u in urls]
    assert all(e["description"] for e in answer["endpoints"])
    assert [e["methods"] for e in answer["endpoints"]] == [["GET", "POST"]] * len(ENDPOINTS) + [
        ["GET"]
    ]
    # As the endpoints themselves say.
    for entry in answer["endpoints"]:
        allowed = APIClient().options(entry["url"])["Allow"]
        assert allowed == ", ".join([*entry["methods"], "HEAD", "OPTIONS"]), entry["url"]


# --- Auth and throttling -------------------------------------------------------------------------


def test_reads_need_a_token_unless_public(db, settings, auth_client, user):
    settings.ANALYTICS_PUBLIC_READ = False
    for url in ENDPOINTS:
        assert APIClient().post(url, {}, format="json").status_code == 401
        assert auth_client(user).post(url, {}, format="json").status_code == 200
    settings.ANALYTICS_PUBLIC_READ = True
    assert APIClient().post(ENDPOINTS[0], {}, format="json").status_code == 200


def test_a_cached_read_with_a_token_needs_no_query_but_the_version(
    db, settings, auth_client, user, data, django_assert_num_queries
):
    # The token is trusted without a user lookup. The rebuild version and the throttle counter
    # live in the cache when it is shared (Redis), else in the database (one query each).
    settings.ANALYTICS_PUBLIC_READ = False
    settings.ANALYTICS_CACHE_SECONDS = 60
    client = auth_client(user)
    url, body = SEED_CALLS[0]
    assert client.post(url, body, format="json").json()["meta"]["cached"] is False
    with django_assert_num_queries(0 if rebuild_version_cached() else 2):
        answer = client.post(url, body, format="json").json()
    assert answer["meta"]["cached"] is True


@pytest.mark.skipif(not rebuild_version_cached(), reason="the cache is not Redis here")
def test_a_cached_read_is_one_redis_round_trip_with_its_throttle_count(
    db, settings, auth_client, user, data, monkeypatch
):
    # The answer, the rebuild version and the throttle's counter: one pipeline to the real
    # Redis (counted where redis-py sends, not replaced).
    settings.ANALYTICS_PUBLIC_READ = False
    settings.ANALYTICS_CACHE_SECONDS = 60
    client = auth_client(user)
    url, body = SEED_CALLS[0]
    assert client.post(url, body, format="json").json()["meta"]["cached"] is False
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(connection: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(command)
        return original(connection, command, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    answer = client.post(url, body, format="json").json()
    assert answer["meta"]["cached"] is True
    assert len(sent) == 1
    commands = b"".join(sent if isinstance(sent[0], bytes) else sent[0]).upper()
    assert b"INCR" in commands and b"MGET" in commands


@pytest.mark.parametrize("cached_seconds", [60, 0])
def test_a_throttled_read_is_a_429_whatever_else_is_wrong_with_it(public, settings, cached_seconds):
    # Throttles are checked first: a request past the limit gets its 429 even when its filters
    # are wrong (or it skips the cache, or there is none), and wrong requests count too.
    settings.ANALYTICS_CACHE_SECONDS = cached_seconds
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"analytics_user": "3/min", "analytics_anon": "3/min"},
    }
    wrong = {"year": "soon"}
    with time_machine.travel(TODAY.replace(second=10), tick=False):
        codes = [
            public.post(ENDPOINTS[2], wrong, format="json").status_code,
            public.post(ENDPOINTS[2], {}, format="json", HTTP_CACHE_CONTROL="no-cache").status_code,
            public.post(ENDPOINTS[2], {}, format="json").status_code,
            public.post(ENDPOINTS[2], wrong, format="json").status_code,
            public.post(ENDPOINTS[2], {}, format="json", HTTP_CACHE_CONTROL="no-cache").status_code,
            public.get("/api/analytics/realtime/").status_code,
        ]
        assert codes == [400, 200, 200, 429, 429, 429]
        refused = public.post(ENDPOINTS[2], wrong, format="json")
        assert refused["Retry-After"] == "50"
        assert refused.json()["error"]["code"] == "throttled"


def test_a_deactivated_user_reads_until_the_token_expires_but_cannot_refresh(
    db, settings, user, password
):
    settings.ANALYTICS_PUBLIC_READ = False
    tokens = (
        APIClient()
        .post("/api/token/", {"username": user.username, "password": password}, format="json")
        .json()
    )
    user.is_active = False
    user.save()
    reader = APIClient()
    reader.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert reader.post(ENDPOINTS[0], {}, format="json").status_code == 200
    refreshed = APIClient().post(
        "/api/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert refreshed.status_code == 401
    # Endpoints that need permissions look the user up.
    assert reader.post("/api/ingest/views/", {"views": []}, format="json").status_code == 401


def test_reads_are_throttled_per_client_and_window(public, settings, auth_client, user):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"analytics_user": "3/min", "analytics_anon": "2/min"},
    }
    minute = TODAY.replace(second=10)
    with time_machine.travel(minute, tick=False):
        codes = [public.post(ENDPOINTS[2], {}, format="json").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        refused = public.post(ENDPOINTS[2], {}, format="json")
        assert refused.status_code == 429
        assert refused["Retry-After"] == "50"
        assert refused.json()["error"]["code"] == "throttled"
        # A signed-in user has a window of their own, at their own rate.
        reader = auth_client(user)
        codes = [reader.post(ENDPOINTS[2], {}, format="json").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
    with time_machine.travel(minute + timedelta(minutes=1), tick=False):
        assert public.post(ENDPOINTS[2], {}, format="json").status_code == 200


def test_a_rotating_forwarded_for_header_does_not_dodge_the_address_throttle(public, settings):
    # No proxy is trusted by default: the socket's address counts, whatever the header says.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"analytics_user": "3/min", "analytics_anon": "5/min"},
    }
    codes = [
        public.post(
            ENDPOINTS[2], {}, format="json", HTTP_X_FORWARDED_FOR=f"203.0.113.{n}"
        ).status_code
        for n in range(30)
    ]
    assert codes == [200] * 5 + [429] * 25


def test_behind_trusted_proxies_the_address_they_saw_counts(public, settings):
    # One trusted proxy: it appends the address it saw; what the client wrote before is ignored.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"analytics_user": "3/min", "analytics_anon": "2/min"},
        "NUM_PROXIES": 1,
    }

    def read(forwarded_for: str) -> int:
        return public.post(
            ENDPOINTS[2], {}, format="json", HTTP_X_FORWARDED_FOR=forwarded_for
        ).status_code

    assert [read(f"10.0.0.{n}, 198.51.100.7") for n in range(3)] == [200, 200, 429]
    # Another client behind the same proxy has a window of its own.
    assert read("198.51.100.8") == 200


# --- Cache ---------------------------------------------------------------------------------------


def test_cache_hit_bypass_and_expiry(public, data, settings):
    settings.ANALYTICS_CACHE_SECONDS = 60
    url, body = SEED_CALLS[0]

    def japan(answer: dict[str, Any]) -> int:
        return next(row["views"] for row in answer["results"] if row["country_code"] == "JP")

    first = public.post(url, body, format="json").json()
    assert first["meta"]["cached"] is False
    views_record(views=[(data[0], "JP", datetime(2024, 5, 1, tzinfo=UTC))] * 5)
    hit = public.post(url, body, format="json").json()  # the cached answer does not see them...
    assert hit["meta"]["cached"] is True
    assert hit["results"] == first["results"] and hit["meta"]["as_of"] == first["meta"]["as_of"]
    fresh = public.post(url, body, format="json", HTTP_CACHE_CONTROL="no-cache").json()
    assert fresh["meta"]["cached"] is False  # ...a no-cache read does
    assert japan(fresh) == japan(first) + 5
    # The no-cache answer refreshed the cache.
    assert japan(public.post(url, body, format="json").json()) == japan(first) + 5


def test_a_cached_answer_is_sent_as_it_was_rendered_and_indented_on_request(public, data, settings):
    # The cache holds the answer's JSON (cached: true), sent as it is: the same bytes DRF
    # renders for that answer, and an indented rendering when the client asks for one.
    settings.ANALYTICS_CACHE_SECONDS = 60
    url, body = SEED_CALLS[1]
    first = public.post(url, body, format="json")
    assert first.content == JSONRenderer().render(first.json())
    expected = {**first.json(), "meta": {**first.json()["meta"], "cached": True}}
    assert public.post(url, body, format="json").content == JSONRenderer().render(expected)
    indented = "application/json; indent=2"
    hit = public.post(url, body, format="json", HTTP_ACCEPT=indented)
    assert (
        hit.content == JSONRenderer().render(expected, indented) != JSONRenderer().render(expected)
    )


def test_cached_answers_expire(public, data, settings):
    settings.ANALYTICS_CACHE_SECONDS = 1
    url, body = SEED_CALLS[1]
    public.post(url, body, format="json")
    assert public.post(url, body, format="json").json()["meta"]["cached"] is True
    # Redis expires keys on its own clock, the local-memory cache on the (frozen) one here.
    time.sleep(1.1)
    with time_machine.travel(TODAY + timedelta(seconds=2), tick=False):
        assert public.post(url, body, format="json").json()["meta"]["cached"] is False


def test_a_rebuild_invalidates_cached_answers(public, data, settings):
    settings.ANALYTICS_CACHE_SECONDS = 600
    url, body = SEED_CALLS[1]
    before = public.post(url, body, format="json").json()
    # Views written behind the API under the watermark are invisible until a rebuild.
    top = before["results"][0]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM ingest_blogview WHERE blog_id = %s", [top["blog_id"]])
    assert public.post(url, body, format="json").json()["meta"]["cached"] is True
    rollups_rebuild()
    after = public.post(url, body, format="json").json()
    assert after["meta"]["cached"] is False
    assert top["blog_id"] not in [row["blog_id"] for row in after["results"]]


def test_an_answer_computed_before_a_rebuild_is_not_served_after_it(public, data, settings):
    """An answer whose snapshot predates a rebuild, stored once the rebuild is done (a slow
    request), carries the old version and is never served."""
    settings.ANALYTICS_CACHE_SECONDS = 600
    url, body = SEED_CALLS[1]
    spec = spec_parse(payload=body, extras=TOP)
    stale = selectors.top_blogs(spec=spec)
    rollups_rebuild()
    assert stale.version < rebuild_version()
    answer_cached(endpoint="top/blog", spec=spec, compute=lambda: stale)
    assert public.post(url, body, format="json").json()["meta"]["cached"] is False
    assert public.post(url, body, format="json").json()["meta"]["cached"] is True


@override_settings(
    CACHES={
        "default": {
            "BACKEND": "core.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    },
    ANALYTICS_CACHE_SECONDS=60,
)
def test_answers_still_come_when_the_cache_is_down(public, data, caplog):
    for url in ENDPOINTS:
        response = public.post(url, {}, format="json")
        assert response.status_code == 200, url
        assert response.json()["meta"]["cached"] is False
    assert "cache unavailable" in caplog.text


def test_an_answer_larger_than_the_cap_is_served_but_not_cached(public, data, settings, caplog):
    settings.ANALYTICS_CACHE_SECONDS = 60
    url, body = SEED_CALLS[1]
    first = public.post(url, body, format="json").json()
    settings.ANALYTICS_CACHE_MAX_BYTES = 500
    second = public.post(url, {**body, "limit": 11}, format="json").json()
    assert second["meta"]["cached"] is False and second["results"]
    assert public.post(url, {**body, "limit": 11}, format="json").json()["meta"]["cached"] is False
    assert "not cached" in caplog.text and "ANALYTICS_CACHE_MAX_BYTES" in caplog.text
    # Answers under the cap are cached as before.
    settings.ANALYTICS_CACHE_MAX_BYTES = 1024 * 1024
    assert public.post(url, body, format="json").json() == {
        **first,
        "meta": {**first["meta"], "cached": True},
    }


# --- Freshness -----------------------------------------------------------------------------------


def test_a_view_acknowledged_by_ingest_is_counted_by_the_next_no_cache_read(
    db, settings, auth_client, ingest_user, frozen_today
):
    settings.ANALYTICS_CACHE_SECONDS = 60
    blog_ids = analytics_data(seed=4, views=200)
    reader = auth_client(ingest_user)
    before = reader.post("/api/analytics/top/country/", {"country_codes": ["ET"]}, format="json")
    views = before.json()["results"][0]["views"] if before.json()["results"] else 0
    accepted = reader.post(
        "/api/ingest/views/",
        {"views": [{"blog_id": blog_ids[0], "country_code": "et"}] * 3},
        format="json",
    )
    assert accepted.status_code == 202
    after = reader.post(
        "/api/analytics/top/country/",
        {"country_codes": ["ET"]},
        format="json",
        HTTP_CACHE_CONTROL="no-cache",
    ).json()
    assert after["results"][0]["views"] == views + 3


@pytest.mark.django_db(transaction=True)
def test_reads_are_exact_while_a_rollup_commits_in_small_steps(frozen_today):
    analytics_data(seed=5, views=3000)
    rollups_absorb_pending()
    total = BlogView.objects.count()
    first = BlogView.objects.order_by("id").values_list("blog_id", "country_id", "viewed_at")
    views_record(views=list(first[:2000]))  # pending again
    total += 2000
    done = threading.Event()
    errors: list[BaseException] = []

    def absorb() -> None:
        try:
            rollups_absorb_pending(chunk_ids=25)
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()
            connection.close()

    thread = threading.Thread(target=absorb)
    thread.start()
    seen = []
    while not done.is_set():
        rows = country_breakdown(spec=Spec()).results
        seen.append(sum(row["views"] for row in rows))
    thread.join()
    assert not errors
    assert len(seen) > 1
    assert set(seen) == {total}


# --- Queries do not grow with the data -----------------------------------------------------------


@pytest.mark.parametrize("views", [100, 1500])
@pytest.mark.parametrize("url", ENDPOINTS)
def test_query_count_is_fixed(public, django_assert_max_num_queries, url, views):
    analytics_data(seed=6, views=views)
    body = {"author_username": "bob", "country_codes": ["US", "DE"], "start_date": "2024-02-03"}
    with django_assert_max_num_queries(8):
        assert (
            public.post(url, body, format="json", HTTP_CACHE_CONTROL="no-cache").status_code == 200
        )
