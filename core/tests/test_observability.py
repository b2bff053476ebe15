"""Metrics move when what they count happens; /metrics is for staff and the scraper's token;
every log line of a request (and of the tasks it sends) carries its request id."""

import io
import json
import logging
import logging.config
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from django.db import OperationalError
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from core.logs import logging_config, request_id_var
from core.metrics import metrics_text, process_registry
from core.models import Blog
from ingest.services import views_record
from rollups.absorb import rollups_absorb_pending, rollups_absorb_recent
from rollups.models import RebuildJob
from rollups.tasks import absorb_pending_task, reap_rebuild_jobs_task

METRICS_TOKEN = "scraper-token-for-tests"
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"


@pytest.fixture
def blog_ids(db: None, django_user_model: Any) -> list[int]:
    author = django_user_model.objects.create_user(username="author", password="x")
    return [Blog.objects.create(title=f"Blog {n}", author=author).pk for n in range(3)]


@pytest.fixture
def ingest_random(blog_ids: list[int]) -> Callable[..., int]:
    """``ingest_random(count)``: record ``count`` views of today, spread over blogs and
    countries."""

    def ingest(count: int) -> int:
        now = timezone.now()
        countries = ["US", "DE", "IN"]
        return views_record(views=[(blog_ids[n % 3], countries[n % 2], now) for n in range(count)])

    return ingest


def sample(name: str, **labels: str) -> float:
    """A metric's current value in this process (0 when it has not been counted yet)."""
    return process_registry().get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def _metrics_token(settings: Any) -> None:
    settings.METRICS_TOKEN = METRICS_TOKEN


def _scrape(client: APIClient) -> str:
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


# --- Who may read /metrics --------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_answer_staff_and_the_token_only(
    api_client: APIClient, auth_client: Any, user: Any, staff_user: Any
) -> None:
    assert api_client.get("/metrics").status_code == 401
    assert api_client.get("/metrics")["WWW-Authenticate"].startswith("Bearer")
    assert api_client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert auth_client(user).get("/metrics").status_code == 403
    assert auth_client(staff_user).get("/metrics").status_code == 200
    assert "blogviews_http_requests_total" in _scrape(api_client)
    session = APIClient()
    session.force_login(staff_user)
    assert session.get("/metrics").status_code == 200


@pytest.mark.django_db
def test_without_a_token_configured_only_staff_get_metrics(
    api_client: APIClient, settings: Any
) -> None:
    settings.METRICS_TOKEN = ""
    assert api_client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


# --- HTTP -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_requests_are_counted_and_timed_by_endpoint_and_status(api_client: APIClient) -> None:
    ok = {"endpoint": "healthz", "method": "GET", "status": "200"}
    missing = {"endpoint": "unmatched", "method": "GET", "status": "404"}
    before = sample("blogviews_http_requests_total", **ok)
    timed = sample(
        "blogviews_http_request_duration_seconds_count", endpoint="healthz", method="GET"
    )
    missing_before = sample("blogviews_http_requests_total", **missing)

    for _ in range(3):
        api_client.get("/healthz")
    api_client.get("/no/such/page")

    assert sample("blogviews_http_requests_total", **ok) == before + 3
    assert (
        sample("blogviews_http_request_duration_seconds_count", endpoint="healthz", method="GET")
        == timed + 3
    )
    assert sample("blogviews_http_requests_total", **missing) == missing_before + 1
    assert 'blogviews_http_requests_total{endpoint="healthz",method="GET",status="200"}' in (
        _scrape(api_client)
    )


@pytest.mark.django_db
def test_throttled_requests_are_counted(api_client: APIClient, settings: Any) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"analytics_user": "100/min", "analytics_anon": "1/min"},
    }
    before = sample("blogviews_http_throttled_total", endpoint="analytics-performance")

    statuses = [
        api_client.post("/api/analytics/performance/", {}, format="json").status_code
        for _ in range(2)
    ]

    assert statuses == [200, 429]
    assert sample("blogviews_http_throttled_total", endpoint="analytics-performance") == before + 1


@pytest.mark.django_db
def test_analytics_cache_hits_misses_and_bypasses_are_counted(
    api_client: APIClient, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    before = {
        result: sample("blogviews_analytics_cache_total", result=result)
        for result in ("hit", "miss", "bypass")
    }

    api_client.post("/api/analytics/performance/", {}, format="json")
    api_client.post("/api/analytics/performance/", {}, format="json")
    api_client.post("/api/analytics/performance/", {}, format="json", HTTP_CACHE_CONTROL="no-cache")

    after = {result: sample("blogviews_analytics_cache_total", result=result) for result in before}
    assert {result: after[result] - before[result] for result in before} == {
        "miss": 1,
        "hit": 1,
        "bypass": 1,
    }


@pytest.mark.django_db
def test_a_cache_that_is_down_is_counted_as_failing_open(
    api_client: APIClient, settings: Any
) -> None:
    settings.ANALYTICS_PUBLIC_READ = True
    components = ("analytics_cache_read", "analytics_cache_write", "read_throttle")
    before = {name: sample("blogviews_fail_open_total", component=name) for name in components}
    down = {
        "default": {
            "BACKEND": "core.cache.RedisCache",
            "LOCATION": CLOSED_REDIS_URL,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }

    with override_settings(CACHES=down):
        response = api_client.post("/api/analytics/performance/", {}, format="json")

    assert response.status_code == 200
    for name in components:
        assert sample("blogviews_fail_open_total", component=name) == before[name] + 1, name


# --- Ingest -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_ingest_batches_and_views_are_counted_by_outcome(
    auth_client: Any, ingest_user: Any, blog_ids: list[int]
) -> None:
    client = auth_client(ingest_user)
    names = ("accepted", "refused", "replayed")
    batches = {name: sample("blogviews_ingest_batches_total", outcome=name) for name in names}
    views = {name: sample("blogviews_ingest_views_total", outcome=name) for name in names[:2]}
    good = {"views": [{"blog_id": blog_ids[0], "country_code": "US"}] * 3}
    bad = {"views": [{"blog_id": blog_ids[0], "country_code": "??"}] * 2}

    assert (
        client.post(
            "/api/ingest/views/", good, format="json", HTTP_IDEMPOTENCY_KEY="k1"
        ).status_code
        == 202
    )
    assert (
        client.post(
            "/api/ingest/views/", good, format="json", HTTP_IDEMPOTENCY_KEY="k1"
        ).status_code
        == 202
    )
    assert client.post("/api/ingest/views/", bad, format="json").status_code == 400
    assert (
        client.post("/api/ingest/views/", "{not json", content_type="application/json").status_code
        == 400
    )

    def moved(name: str, before: dict[str, float], outcome: str) -> float:
        return sample(name, outcome=outcome) - before[outcome]

    assert moved("blogviews_ingest_batches_total", batches, "accepted") == 1
    assert moved("blogviews_ingest_batches_total", batches, "replayed") == 1
    assert moved("blogviews_ingest_batches_total", batches, "refused") == 2
    assert moved("blogviews_ingest_views_total", views, "accepted") == 3
    assert moved("blogviews_ingest_views_total", views, "refused") == 2


# --- Rollups ----------------------------------------------------------------------------------


def _gauges(text: str) -> dict[str, float]:
    """The unlabelled samples of a scrape."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.mark.django_db
def test_absorb_runs_and_the_rollups_state_move_the_metrics(
    api_client: APIClient, ingest_random: Any
) -> None:
    runs = sample("blogviews_absorb_runs_total")
    absorbed = sample("blogviews_absorb_views_total")
    timed = sample("blogviews_absorb_duration_seconds_count")
    ingest_random(40)

    before = _gauges(_scrape(api_client))
    assert before["blogviews_rollups_pending_views"] == 40
    assert before["blogviews_absorb_stale"] == 1
    assert before["blogviews_absorb_last_success_timestamp_seconds"] == 0
    assert before["blogviews_recent_absorb_last_success_timestamp_seconds"] == 0
    assert before["blogviews_recent_pending_ids"] >= 40  # ids: rolled-back ones count too
    assert before["blogviews_metrics_database_up"] == 1

    rollups_absorb_pending()

    after = _gauges(_scrape(api_client))
    assert after["blogviews_rollups_pending_views"] == 0
    assert after["blogviews_rollups_lag_seconds"] == 0
    assert after["blogviews_absorb_stale"] == 0
    assert after["blogviews_absorb_last_success_timestamp_seconds"] == pytest.approx(
        timezone.now().timestamp(), abs=60
    )
    # The per-minute rows' own run (rollups_absorb_pending runs it after the summaries').
    assert after["blogviews_recent_pending_ids"] == 0
    assert after["blogviews_recent_absorb_last_success_timestamp_seconds"] == pytest.approx(
        timezone.now().timestamp(), abs=60
    )
    assert sample("blogviews_absorb_runs_total") == runs + 1
    assert sample("blogviews_absorb_views_total") == absorbed + 40
    assert sample("blogviews_absorb_duration_seconds_count") == timed + 1
    assert 'blogviews_rebuild_jobs{state="queued"} 0.0' in metrics_text().decode()
    RebuildJob.objects.create(state=RebuildJob.State.FAILED)
    RebuildJob.objects.create(state=RebuildJob.State.FAILED)
    RebuildJob.objects.create(state=RebuildJob.State.RUNNING)
    text = metrics_text().decode()
    assert 'blogviews_rebuild_jobs{state="failed"} 2.0' in text
    assert 'blogviews_rebuild_jobs{state="running"} 1.0' in text
    assert 'blogviews_rebuild_jobs{state="done"} 0.0' in text


@pytest.mark.django_db
def test_absorb_is_stale_after_three_intervals_without_a_run(
    api_client: APIClient, auth_client: Any, staff_user: Any, settings: Any
) -> None:
    settings.ROLLUP_INTERVAL_SECONDS = 10
    rollups_absorb_pending()
    staff = auth_client(staff_user)
    assert staff.get("/api/rollups/status/").json()["absorb_alive"] is True
    assert staff.get("/readyz").json()["absorb"]["alive"] is True

    with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=False):
        assert _gauges(_scrape(api_client))["blogviews_absorb_stale"] == 1
        assert staff.get("/api/rollups/status/").json()["absorb_alive"] is False
        ready = staff.get("/readyz")
        # The web process still serves: stale absorb is reported, not a reason to be unready.
        assert ready.status_code == 200
        assert ready.json()["absorb"]["alive"] is False
        assert ready.json()["absorb"]["max_age_seconds"] == 30
    # Anonymous probes see the dependencies only.
    assert api_client.get("/readyz").json()["absorb"] is None


@pytest.mark.django_db
def test_task_failures_and_retries_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from rollups import absorb

    task = absorb_pending_task
    failures = sample("blogviews_task_failures_total", task=task.name)
    retries = sample("blogviews_task_retries_total", task=task.name)

    def broken(**kwargs: Any) -> None:
        raise ValueError("broken on purpose")

    monkeypatch.setattr(absorb, "rollups_absorb_pending", broken)
    task.apply()
    assert sample("blogviews_task_failures_total", task=task.name) == failures + 1

    def database_away(**kwargs: Any) -> None:
        raise OperationalError("the database went away")

    monkeypatch.setattr(absorb, "rollups_absorb_pending", database_away)
    monkeypatch.setattr(task, "max_retries", 1)
    task.apply()
    assert sample("blogviews_task_retries_total", task=task.name) >= retries + 1


# --- Request ids and JSON logs ----------------------------------------------------------------


@pytest.fixture
def json_log(settings: Any) -> Iterator[io.StringIO]:
    """The logging configuration of LOG_FORMAT=json, writing into a buffer."""
    stream = io.StringIO()
    config = logging_config(log_format="json", level="INFO")
    config["handlers"]["console"]["stream"] = stream  # type: ignore[index]
    logging.config.dictConfig(config)
    try:
        yield stream
    finally:
        logging.config.dictConfig(settings.LOGGING)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.django_db
def test_a_request_id_is_returned_and_on_every_log_line(
    api_client: APIClient, json_log: io.StringIO, settings: Any
) -> None:
    settings.LOG_REQUESTS = True
    response = api_client.get("/no/such/page", HTTP_X_REQUEST_ID="req-abc.123")
    assert response["X-Request-ID"] == "req-abc.123"

    lines = _lines(json_log)
    request_line = next(line for line in lines if line["logger"] == "core.requests")
    assert request_line["request_id"] == "req-abc.123"
    assert request_line["status"] == 404
    assert request_line["endpoint"] == "unmatched"
    assert request_line["level"] == "INFO"
    assert "duration_ms" in request_line
    assert {line["request_id"] for line in lines} == {"req-abc.123"}

    # None sent, or one that could forge a header or a log line: a fresh one.
    fresh = api_client.get("/healthz")["X-Request-ID"]
    forged = api_client.get("/healthz", HTTP_X_REQUEST_ID="a b\nc")["X-Request-ID"]
    assert len(fresh) == 32 and len(forged) == 32 and fresh != forged


@pytest.mark.django_db
def test_an_absorb_run_logs_one_line_with_its_figures(
    ingest_random: Any, json_log: io.StringIO
) -> None:
    ingest_random(25)
    rollups_absorb_pending()

    # The summaries' run, then the per-minute rows'.
    line, recent = [line for line in _lines(json_log) if line["logger"] == "rollups.absorb"]
    assert line["views"] == 25
    assert line["groups"] == 6
    assert line["lag_seconds"] == 0
    assert isinstance(line["duration_ms"], int)
    assert line["request_id"] == "-"
    assert " views into the per-minute rows through id " in recent["message"]
    assert recent["absorbed_through_id"] == line["absorbed_through_id"]
    # A per-minute run with nothing new (beat sends one every few seconds) logs at DEBUG only.
    rollups_absorb_recent()
    assert [line for line in _lines(json_log) if line["logger"] == "rollups.absorb"] == [
        line,
        recent,
    ]


def test_a_task_sent_during_a_request_carries_its_id() -> None:
    from worker.celery import _request_id_send, _request_id_set

    token = request_id_var.set("req-42")
    try:
        headers: dict[str, Any] = {}
        _request_id_send(headers=headers)
    finally:
        request_id_var.reset(token)
    assert headers == {"request_id": "req-42"}

    # The worker side: the header arrives as an attribute of the task's request.
    task = reap_rebuild_jobs_task
    task.push_request(**{"id": "t-1", "request_id": "req-42"})
    try:
        _request_id_set(task=task)
        assert request_id_var.get() == "req-42"
    finally:
        task.pop_request()
        request_id_var.set(None)


def test_log_format_text_is_the_default_and_json_is_one_object_a_line() -> None:
    text = logging_config(log_format="text", level="INFO")
    assert "request_id" in text["formatters"]["main"]["format"]  # type: ignore[index]
    config = logging_config(log_format="json", level="INFO")
    assert config["formatters"]["main"]["()"] == "pythonjsonlogger.json.JsonFormatter"  # type: ignore[index]


def test_celery_lines_about_routine_runs_that_did_nothing_are_dropped(
    json_log: io.StringIO,
) -> None:
    """Beat sends the per-minute absorb every 5 s: Celery's lines about it (sent, received,
    succeeded with 0) would be three every 5 s in `make run`'s console. They are dropped, with
    Celery's own messages and loggers; a run that did something, another task, and a failure
    still log."""
    from celery.app.trace import LOG_FAILURE, LOG_RECEIVED, LOG_SUCCESS

    beat = logging.getLogger("celery.beat")
    received = logging.getLogger("celery.worker.strategy")
    trace = logging.getLogger("celery.app.trace")

    def run(task: str, returned: str) -> None:
        beat.info("Scheduler: Sending due task %s (%s)", f"the {task} entry", task)
        received.info(LOG_RECEIVED, {"id": "1", "name": task, "args": "()", "kwargs": "{}"})
        trace.info(
            LOG_SUCCESS,
            {"id": "1", "name": task, "return_value": returned, "runtime": 0.01},
        )

    run("rollups.absorb_recent", "0")
    run("rollups.tend_recent_tables", "0")
    run("rollups.absorb_pending", "0")
    run("rollups.reap_rebuild_jobs", "0")
    assert _lines(json_log) == []

    run("rollups.absorb_recent", "120")  # it absorbed views: its success says how many
    run("rollups.verify_rollups", "0")  # not a routine run: every line
    trace.error(
        LOG_FAILURE,
        {
            "id": "2",
            "name": "rollups.absorb_recent",
            "description": "raised unexpected",
            "exc": "OperationalError",
        },
    )
    assert [line["message"] for line in _lines(json_log)] == [
        "Task rollups.absorb_recent[1] succeeded in 0.01s: 120",
        "Scheduler: Sending due task the rollups.verify_rollups entry (rollups.verify_rollups)",
        "Task rollups.verify_rollups[1] received",
        "Task rollups.verify_rollups[1] succeeded in 0.01s: 0",
        "Task rollups.absorb_recent[2] raised unexpected: OperationalError",
    ]
