"""Optional error reports to Sentry (``SENTRY_DSN``): unhandled exceptions of requests and of
Celery tasks, with the request id as a tag. Off when the DSN is unset: nothing is loaded or
sent."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentry_sdk.types import Event


def _request_id_tag(event: "Event", hint: dict[str, Any]) -> "Event":
    from core.logs import request_id_var, task_var

    tags = event.setdefault("tags", {})
    request_id, task = request_id_var.get(), task_var.get()
    if request_id:
        tags["request_id"] = request_id
    if task:
        tags["task"] = task
    return event


def sentry_init(*, dsn: str, environment: str, traces_sample_rate: float, **options: Any) -> None:
    """Start the Sentry client with the Django and Celery integrations (from the settings)."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sample_rate=traces_sample_rate,
        # The default collects no user names, addresses or cookies.
        before_send=_request_id_tag,
        **options,
    )
