import logging
from typing import Any

from django.conf import settings
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import AnonRateThrottle, SimpleRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


class AnalyticsReadPermission(BasePermission):
    """Any signed-in user; anyone when ``ANALYTICS_PUBLIC_READ`` is on."""

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(
            settings.ANALYTICS_PUBLIC_READ or (request.user and request.user.is_authenticated)
        )


class _FailOpen(SimpleRateThrottle):
    """Throttling keeps its counters in the cache; when the cache is down, let requests in.

    Rates are read from the settings at each request (DRF reads them once, at import).
    """

    def get_rate(self) -> str | None:
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES
        return rates.get(self.scope or "")

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("throttle cache unavailable; request let through", exc_info=True)
            return True


class AnalyticsUserThrottle(_FailOpen, UserRateThrottle):
    scope = "analytics_user"


class AnalyticsAnonThrottle(_FailOpen, AnonRateThrottle):
    scope = "analytics_anon"
