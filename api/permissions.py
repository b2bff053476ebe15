import dataclasses
import logging
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework import exceptions, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from api.spec import Spec
from apikeys.services import api_key_grant
from core.cache import RedisCache, counters_incr
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


@dataclasses.dataclass(frozen=True)
class WindowCount:
    """A request's count in one throttle's current window: the counter (a cache key that names
    the window, and how long it lives) and the limit its new value is checked against."""

    throttle: "WindowThrottle"
    key: str
    seconds: int
    limit: int
    left: float

    def allows(self, used: int) -> bool:
        """Whether the counter's new value ``used`` is within the limit (else the throttle's
        ``wait()`` is the rest of the window)."""
        self.throttle.wait_seconds = self.left
        return used <= self.limit


@dataclasses.dataclass(frozen=True)
class Counts:
    """A request's window counts, added after DRF would have (in a cache lookup's round trip)."""

    pending: tuple[WindowCount, ...] = ()

    def counters(self) -> list[tuple[str, int]]:
        """``(cache key, seconds to live)`` of each counter to add one to."""
        return [(count.key, count.seconds) for count in self.pending]

    def check(self, used: list[int] | None) -> None:
        """429 (``Throttled``, waiting out the longest window) when a counter's new value
        (``used``, in order; ``None``: the cache was down, let through) is past its limit."""
        if used is None:
            return
        waits = [
            count.left
            for count, value in zip(self.pending, used, strict=True)
            if not count.allows(value)
        ]
        if waits:
            raise exceptions.Throttled(max(waits))

    def added(self) -> list[int] | None:
        """Add one to each counter on its own (one round trip with Redis): their new values,
        or ``None`` when the cache is down (logged; the request is then let through)."""
        if not self.pending:
            return []
        try:
            return counters_incr(caches["default"], self.counters())
        except Exception:
            throttle_failed_open()
            return None

    def add(self) -> None:
        """Add them on their own and check them."""
        self.check(self.added())


def throttle_failed_open() -> None:
    """Log (with the exception being handled) and count a throttle skipped for a failing cache."""
    logger.warning("throttle cache unavailable; request let through", exc_info=True)
    FAIL_OPEN.labels("read_throttle").inc()


class WindowThrottle(BaseThrottle):
    """At most N requests per client in each fixed window (``"N/min"``: calendar minutes).

    One counter per client and window, incremented in one cache round trip (or, without
    Redis, one upsert in the database, shared by every process: ``core.cache.counter_incr``).
    DRF's throttles keep every request time of the window in one cache entry, read and
    rewritten whole by each request (two round trips, and a list as long as the rate allows).
    The price of a fixed window: a client may fit up to 2N requests around a window's boundary.
    The analytics views add the counter in the round trip of their answer's cache lookup
    instead (``CountedWithLookup``).

    Rates are read from the settings at each request (DRF reads them once, at import). When the
    cache is down, requests are let through and the failure is logged.
    """

    scope: str
    wait_seconds: float | None = None

    def ident(self, request: Request) -> str | None:
        """Whom the window counts for, or ``None`` to leave the request alone."""
        raise NotImplementedError

    def window_count(self, request: Request) -> WindowCount | None:
        """This request's count in the current window, or ``None`` where this throttle leaves
        the request alone (no rate configured, or not a client it counts)."""
        rates: dict[str, Any] = api_settings.DEFAULT_THROTTLE_RATES
        rate = rates.get(self.scope)
        ident = self.ident(request)
        if not rate or ident is None:
            return None
        limit, seconds = rate_parse(rate)
        window, left = window_current(seconds)
        key = f"throttle:{self.scope}:{ident}:{window}"
        return WindowCount(throttle=self, key=key, seconds=seconds, limit=limit, left=left)

    def allow_request(self, request: Request, view: Any) -> bool:
        count = self.window_count(request)
        if count is None:
            return True
        used = Counts((count,)).added()
        return used is None or count.allows(used[0])

    def wait(self) -> float | None:
        return self.wait_seconds


class CountedWithLookup(APIView):
    """A view whose window throttles count in the round trip of its answer's cache lookup.

    A cached answer then costs one Redis round trip, not two (about 0.15 ms of a 1.5 ms
    answer over HTTP on this project's machines). ``check_throttles`` only notes the counts;
    the view hands ``counts_take()`` to its lookup, which adds and checks them before using
    anything it found (a 429 past a limit, as DRF's check would have answered). A request that
    fails before its lookup (a 400 for its filters, a 403) is counted then, and a 429 wins
    over its error, as when throttles are checked first. Without Redis, throttles are checked
    as DRF does (their counters are in the database there).
    """

    counts_pending: tuple[WindowCount, ...] = ()

    def check_throttles(self, request: Request) -> None:
        if not isinstance(caches["default"], RedisCache):
            super().check_throttles(request)
            return
        pending = []
        for throttle in self.get_throttles():
            assert isinstance(throttle, WindowThrottle), throttle
            count = throttle.window_count(request)
            if count is not None:
                pending.append(count)
        self.counts_pending = tuple(pending)

    def counts_take(self) -> Counts:
        """The counts still to add (once: whoever takes them adds them)."""
        counts, self.counts_pending = Counts(self.counts_pending), ()
        return counts

    def handle_exception(self, exc: Exception) -> Any:
        try:
            self.counts_take().add()
        except exceptions.Throttled as throttled:
            exc = throttled
        return super().handle_exception(exc)


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
