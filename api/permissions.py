import logging
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from core.cache import counter_incr
from core.throttling import client_address, rate_parse, window_current

logger = logging.getLogger(__name__)


class AnalyticsReadPermission(BasePermission):
    """Any signed-in user; anyone when ``ANALYTICS_PUBLIC_READ`` is on."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(
            settings.ANALYTICS_PUBLIC_READ or (request.user and request.user.is_authenticated)
        )


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
            return True
        self.wait_seconds = left
        return used <= limit

    def wait(self) -> float | None:
        return self.wait_seconds


class AnalyticsUserThrottle(WindowThrottle):
    """Per signed-in user."""

    scope = "analytics_user"

    def ident(self, request: Request) -> str | None:
        user = request.user
        return str(user.pk) if user and user.is_authenticated else None


class AnalyticsAnonThrottle(WindowThrottle):
    """Per client address (``NUM_PROXIES``: see ``core.throttling.client_address``), for
    requests without a user (public read)."""

    scope = "analytics_anon"

    def ident(self, request: Request) -> str | None:
        user = request.user
        return None if user and user.is_authenticated else client_address(request)
