"""Sentry: off without SENTRY_DSN; with one, an unhandled error of a request is reported with the
request's id (through a transport of the test's: nothing leaves the machine)."""

from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from django.test import Client
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from core.errors import sentry_init
from core.views import HealthView


class CapturedTransport(Transport):
    """Keeps what the client would send."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


@pytest.fixture
def captured() -> Iterator[CapturedTransport]:
    transport = CapturedTransport()
    sentry_init(
        dsn="https://public@sentry.invalid/1",
        environment="test",
        traces_sample_rate=0.0,
        transport=transport,
    )
    try:
        yield transport
    finally:
        # Back to a client without DSN or integrations: the integrations' patches (global, for
        # good) find none enabled and step aside; nothing is reported.
        sentry_sdk.init(default_integrations=False, auto_enabling_integrations=False)


def test_sentry_is_off_without_a_dsn(settings: Any) -> None:
    assert settings.SENTRY_DSN == ""
    # No client, or one without a DSN: nothing can be sent.
    client = sentry_sdk.get_client()
    assert not client.is_active() or client.transport is None


@pytest.mark.django_db
def test_an_unhandled_error_is_reported_with_the_request_id(
    captured: CapturedTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Any, request: Any) -> Any:
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(HealthView, "get", broken)

    response = Client(raise_request_exception=False).get("/healthz", HTTP_X_REQUEST_ID="req-err-1")
    sentry_sdk.flush()

    assert response.status_code == 500
    events = [
        item.payload.json
        for envelope in captured.envelopes
        for item in envelope.items
        if item.type == "event"
    ]
    (event,) = events
    assert event is not None
    assert event["exception"]["values"][-1]["value"] == "broken on purpose"
    assert event["tags"]["request_id"] == "req-err-1"
    assert event["environment"] == "test"
