import dataclasses
import logging
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework import status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from api.spec import Spec
from apikeys.services import api_key_grant
from core.cache import counter_incr
from core.exceptions import ApplicationError
from core.metrics import FAIL_OPEN
from core.throttling import client_address, rate_parse, window_current

logger = logging.getLogger(__name__)


class AnalyticsReadPermission(BasePermission):
    """Any signed-in user; anyone when ``ANALYTICS_PUBLIC_READ`` is on. An API key needs the
    ``read`` scope (even with public read: a key is refused where its scope does not reach)."""

    message = "This API key's scope is 'ingest': reading the analytics needs the 'read' scope."

    def has_permission(self, request: Request, view: Any) -> bool:
        grant = api_key_grant(request)
        if grant is not None:
            return grant.can_read
        return bool(
            settings.ANALYTICS_PUBLIC_READ or (request.user and request.user.is_authenticated)
        )


def spec_for_reader(*, request: Request, spec: Spec) -> Spec:
    """The question a read may ask: with an API key restricted to an author, that author's.

    The key's author becomes the filter when the request names none; naming the same author is
    fine; naming another is a 403 (not an empty answer, which would look like "no views").
    The answer (and its cache entry, keyed by the filters) is then the same as that of any
    reader asking for that author: nothing is shared between scopes that one may not see.
    """
    grant = api_key_grant(request)
    if grant is None or grant.author is None:
        return spec
    if spec.author_username is None:
        return dataclasses.replace(spec, author_username=grant.author)
    if spec.author_username != grant.author:
        raise ApplicationError(
            f"This API key reads the blogs of '{grant.author}' only.",
            status=status.HTTP_403_FORBIDDEN,
            code="permission_denied",
            details=[
                {
                    "field": "author_username",
                    "reason": f"must be '{grant.author}' (or omitted) with this API key",
                }
            ],
        )
    return spec


class WindowThrottle(BaseThrottle):
    """At most N requests per client in each fixed window (``"N/min"``: calendar minutes).

    One counter per client and window, incremented in one cache round trip (or, without
    Redis, one upsert in the database, shared by every process: ``core.cache.counter_incr``).
    DRF's throttles keep every request time of the window in one cache entry, read and
    rewritten whole by each request (two round trips, and a list as long as the rate allows).
    The price of a fixed window: a client may fit up to 2N requests around a window's boundary.

    Rates are read from the settings at each request (DRF reads them once, at import). When the
    cache is down, requests are let through and the failure is logged.
    """

    scope: str
    wait_seconds: float | None = None

    def ident(self, request: Request) -> str | None:
        """Whom the window counts for, or ``None`` to leave the request alone."""
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES
        rate = rates.get(self.scope)
        ident = self.ident(request)
        if not rate or ident is None:
            return True
        limit, seconds = rate_parse(rate)
        window, left = window_current(seconds)
        try:
            used = counter_incr(
                caches["default"], f"throttle:{self.scope}:{ident}:{window}", seconds
            )
        except Exception:
            logger.warning("throttle cache unavailable; request let through", exc_info=True)
            FAIL_OPEN.labels("read_throttle").inc()
            return True
        self.wait_seconds = left
        return used <= limit

    def wait(self) -> float | None:
        return self.wait_seconds


class AnalyticsUserThrottle(WindowThrottle):
    """Per signed-in user (a request with an API key counts per key instead:
    ``apikeys.authentication.ApiKeyThrottle``)."""

    scope = "analytics_user"

    def ident(self, request: Request) -> str | None:
        user = request.user
        if api_key_grant(request) is not None:
            return None
        return str(user.pk) if user and user.is_authenticated else None


class AnalyticsAnonThrottle(WindowThrottle):
    """Per client address (``NUM_PROXIES``: see ``core.throttling.client_address``), for
    requests without a user (public read)."""

    scope = "analytics_anon"

    def ident(self, request: Request) -> str | None:
        user = request.user
        return None if user and user.is_authenticated else client_address(request)
