"""Who a client is (its address, behind ``NUM_PROXIES`` trusted proxies), fixed-window rates, and
the sign-in throttle of ``/api/token/`` and ``/admin/login/``.

Sign-in counts FAILED attempts only, per username and per client address, in fixed windows
(``LOGIN_THROTTLE_USERNAME``, ``LOGIN_THROTTLE_ADDRESS``). Once either count reaches its limit,
every attempt for that username or from that address is refused with a 429 until the window
ends, before any password is hashed (the hash is what a guesser costs the server). Successful
sign-ins are never counted. The counters are the project's own (``core.cache.counter_incr``):
one Redis round trip each, or one atomic upsert in the database shared by every process.
"""

import hashlib
import logging
import time
import unicodedata
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.http import HttpRequest
from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from core.cache import counter_incr, counters_get
from core.metrics import FAIL_OPEN

logger = logging.getLogger(__name__)

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def client_address(request: HttpRequest | Request) -> str:
    """The client's address: the socket's, or with ``NUM_PROXIES`` = N > 0 trusted proxies in
    front, the address the outermost of them saw (the N-th entry of ``X-Forwarded-For`` from
    the right, as DRF reads it); entries further left were written by the client and prove
    nothing. Unset counts as 0 (DRF would then trust the whole header)."""
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    if proxies <= 0 or not forwarded:
        return remote
    entries = [entry.strip() for entry in str(forwarded).split(",")]
    return entries[-min(proxies, len(entries))]


def rate_parse(rate: str) -> tuple[int, int]:
    """``"N/period"`` (DRF's syntax: ``s``, ``m``, ``h``, ``d`` or words starting with them) as
    ``(N, seconds per window)``."""
    count, period = rate.split("/")
    return int(count), PERIOD_SECONDS[period.strip()[0]]


def window_current(seconds: int) -> tuple[int, float]:
    """``(number of the current window of this length, seconds left in it)``."""
    now = time.time()
    window = int(now // seconds)
    return window, (window + 1) * seconds - now


def _username_key(username: str) -> str:
    # Usernames compare case-sensitively here but not in every database collation: count every
    # spelling of a name as one. Hashed, so that any input makes a short, safe key.
    folded = unicodedata.normalize("NFKC", username).casefold()
    return hashlib.sha256(folded.encode()).hexdigest()[:32]


def _login_limits() -> list[tuple[str, int, int]]:
    """``(counter name prefix, limit, window seconds)`` of each configured sign-in limit."""
    limits = []
    for name, rate in (
        ("username", settings.LOGIN_THROTTLE_USERNAME),
        ("address", settings.LOGIN_THROTTLE_ADDRESS),
    ):
        if rate:
            limit, seconds = rate_parse(rate)
            limits.append((name, limit, seconds))
    return limits


def _login_keys(
    *, request: HttpRequest | Request | None, username: str | None
) -> list[tuple[str, int, int]]:
    """``(counter key, limit, window seconds)`` for this attempt's username and address."""
    keys = []
    for name, limit, seconds in _login_limits():
        if name == "username":
            if username is None:
                continue
            ident = _username_key(username)
        else:
            if request is None:
                continue
            ident = client_address(request)
        window, _ = window_current(seconds)
        keys.append((f"login-failures:{name}:{ident}:{window}", limit, seconds))
    return keys


def login_throttle_wait(*, request: HttpRequest | Request, username: str | None) -> float | None:
    """Seconds until sign-in may be tried again for ``username`` from this client, or ``None``
    when it may be tried now. Reads the failure counters only (one round trip)."""
    keys = _login_keys(request=request, username=username)
    if not keys:
        return None
    try:
        counts = counters_get(caches["default"], [key for key, _, _ in keys])
    except Exception:
        logger.warning("sign-in throttle counters unavailable; attempt let through", exc_info=True)
        FAIL_OPEN.labels("login_throttle").inc()
        return None
    waits = [
        window_current(seconds)[1] for key, limit, seconds in keys if counts.get(key, 0) >= limit
    ]
    return max(waits) if waits else None


def login_failure_record(*, request: HttpRequest | Request | None, username: str | None) -> None:
    """Count one failed sign-in against ``username`` and the client's address."""
    for key, _, seconds in _login_keys(request=request, username=username):
        try:
            counter_incr(caches["default"], key, seconds)
        except Exception:
            logger.warning("sign-in throttle counter unavailable", exc_info=True)
            FAIL_OPEN.labels("login_throttle").inc()


def login_failed_receiver(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    """``user_login_failed``: every failed ``authenticate()`` (API token, admin) counts."""
    username = credentials.get(get_user_model().USERNAME_FIELD)
    login_failure_record(request=request, username=username if isinstance(username, str) else None)


LOGIN_THROTTLED_MESSAGE = "Too many failed sign-in attempts for this username or from this address."


class LoginThrottle(BaseThrottle):
    """Refuses a sign-in (429, ``Retry-After``) while its username or address is throttled."""

    def allow_request(self, request: Request, view: Any) -> bool:
        data = request.data
        username = data.get(get_user_model().USERNAME_FIELD) if hasattr(data, "get") else None
        wait = login_throttle_wait(
            request=request, username=username if isinstance(username, str) else None
        )
        if wait is not None:
            # DRF adds "Expected available in N seconds." and the Retry-After header.
            raise Throttled(wait=wait, detail=LOGIN_THROTTLED_MESSAGE)
        return True
