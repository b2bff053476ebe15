"""The OpenAPI schema served at ``/api/schema/`` against what the analytics reads really answer.

Schemathesis loads the schema from the WSGI application, in-process, and fuzzes every analytics
``POST`` and ``GET`` operation with bodies and query strings generated from it (JSON and CSV
answers, by the ``format`` parameter): ones that fit it (positive) and ones that break
it (negative; it also drops or spoils the token then). Each answer must be a documented status,
with the documented content type and headers and a body that fits the schema of that status,
and never a 5xx. Signed-in reads (a real token, or a read API key; public read off), throttles
that never trip, and data to answer from.

A schema-valid body must be accepted (``positive_data_acceptance``), or refused with a 400 that
names only rules a JSON schema cannot express (an unknown country code, ``start_date`` after
``end_date``, ``year`` together with dates, more than 1,000 performance buckets):
``soak.fuzz_checks.refusals_name_only_unstated_rules``, which the soak's CLI run uses too.

Checks left out: the stateful and probing ones (``use_after_free``,
``ensure_resource_availability``, ``unsupported_method``, ``missing_required_header``...): reads
create no resources, and the schema declares no headers or other methods for these paths.
"""

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework.test import APIClient
from schemathesis import CheckFunction, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.tests.conftest import ENDPOINTS, analytics_data
from apikeys.services import api_key_create
from core.wsgi import application
from soak.fuzz_checks import refusals_name_only_unstated_rules

EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 30}
# The body's fields as a JSON object (POST) and as query parameters (GET).
METHODS = ["POST", "GET"]
OPERATIONS = [(path, method) for path in ENDPOINTS for method in METHODS]
OPERATIONS.append(("/api/analytics/realtime/", "GET"))
CONFORMANCE: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CHECKS: dict[GenerationMode, list[CheckFunction]] = {
    # A 2xx must need the token the schema asks for (a request without it, or with a bad one,
    # is sent to see that it is refused); what the schema calls valid is accepted.
    GenerationMode.POSITIVE: [
        *CONFORMANCE,
        ignored_auth,
        positive_data_acceptance,
        refusals_name_only_unstated_rules,
    ],
    # What the schema forbids (a wrong type, an unknown field, a missing token...) is a 4xx.
    GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection],
}


@contextmanager
def kept_connection() -> Iterator[None]:
    """Requests to the WSGI application that leave the test's database connection open.

    Django closes "old" connections as each request starts and ends, which in the transaction
    of the test drops it; Django's test client skips that in the same way. (Not a fixture: the
    test client connects the handler again after each of its own requests.)
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def analytics_schema() -> Any:
    """The served schema, narrowed to the analytics reads; its calls go to the WSGI app."""
    # The project's schemathesis settings (also those of the soak's run against the server).
    config = schemathesis.Config.from_path(settings.BASE_DIR / "schemathesis.toml")
    loaded = schemathesis.openapi.from_wsgi("/api/schema/", application, config=config)
    return loaded.include(path_regex="^/api/analytics/.+", method=METHODS)


@pytest.fixture
def bearer(db: None, api_client: APIClient, user: Any, password: str) -> str:
    """An ``Authorization`` value with a real access token from ``/api/token/``."""
    response = api_client.post(
        "/api/token/", {"username": user.get_username(), "password": password}, format="json"
    )
    assert response.status_code == 200, response.content
    return f"Bearer {response.json()['access']}"


@pytest.fixture(params=["token", "api-key"])
def credentials(request: pytest.FixtureRequest, bearer: str, user: Any) -> str:
    """An ``Authorization`` value: the token, or a read API key of the same user."""
    if request.param == "token":
        return bearer
    _, secret = api_key_create(name="fuzz", user=user)
    return f"Api-Key {secret}"


@pytest.fixture
def reads(db: None, settings: Any, frozen_today: Any) -> None:
    """Data to answer from, reads that need a token, and throttles that never trip."""
    settings.ANALYTICS_PUBLIC_READ = False
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            "analytics_user": "1000000/s",
            "analytics_anon": "1000000/s",
            "api_key": "1000000/s",
        },
    }
    analytics_data(seed=11, views=800)


@pytest.mark.django_db
def test_every_analytics_read_is_fuzzed() -> None:
    with kept_connection():
        schema = analytics_schema()
    operations = [(result.ok().path, result.ok().method) for result in schema.get_all_operations()]
    assert sorted(operations) == sorted((path, method.lower()) for path, method in OPERATIONS)


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=str)
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_answers_match_the_schema(
    reads: None, credentials: str, path: str, method: str, mode: GenerationMode
) -> None:
    statuses: Counter[int] = Counter()
    with_rows = 0

    def call(case: schemathesis.Case) -> None:
        nonlocal with_rows
        # The credentials replace the generated ones; a negative case may still drop or spoil
        # them.
        response = case.call_and_validate(
            headers={"Authorization": credentials}, checks=CHECKS[mode]
        )
        statuses[response.status_code] += 1
        if response.status_code == 200 and (
            response.text.count("\n") > 1
            if "text/csv" in str(response.headers.get("content-type"))
            else response.json()["results"]
        ):
            with_rows += 1

    with kept_connection():
        operation = analytics_schema()[path][method]
        fuzz = hypothesis_settings(
            max_examples=EXAMPLES[mode],
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
            ],
        )(given(case=operation.as_strategy(generation_mode=mode))(call))
        fuzz()

    # The fuzzing reached the answers, not only the errors.
    summary = f"statuses {dict(statuses)}, {with_rows} answers with rows"
    assert 429 not in statuses, summary
    if mode.is_positive:
        assert with_rows > 0, summary
    else:
        assert statuses[400] > 0, summary
