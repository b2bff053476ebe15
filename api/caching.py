"""Redis (Django's cache) in front of the planner, failing open when the cache is down.

A cached answer is stored with the rebuild version of the snapshot it was computed in, and
served only while that is still the current version: a rebuild makes every older answer
unservable. With Redis, the current version is read from the cache in the same round trip as
the answer (``rollups.rebuild.rebuild_version_publish`` keeps it there); elsewhere (a cache
per process) from the database.
"""

import hashlib
import json
import logging
import pickle
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import caches

from api.selectors import Answer
from api.spec import Spec
from core.metrics import ANALYTICS_CACHE, FAIL_OPEN
from rollups.selectors import (
    REBUILD_VERSION_KEY,
    REBUILD_VERSION_SECONDS,
    rebuild_version,
    rebuild_version_cached,
)

logger = logging.getLogger(__name__)


def answer_key(*, endpoint: str, spec: Spec) -> str:
    """Endpoint + normalized filters."""
    filters = json.dumps(spec.normalized(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(filters.encode()).hexdigest()[:32]
    return f"analytics:{endpoint}:{digest}"


def _cached_lookup(key: str) -> dict[str, Any] | None:
    """The cached entry for ``key`` if it was computed at the current rebuild version."""
    cache = caches["default"]
    current: int | None
    if not rebuild_version_cached():
        found = cache.get(key)
        current = rebuild_version()
    else:
        both = cache.get_many([REBUILD_VERSION_KEY, key])
        found = both.get(key)
        current = both.get(REBUILD_VERSION_KEY)
        if current is None:
            current = rebuild_version()
            # add, not set: a newer version published meanwhile must win.
            cache.add(REBUILD_VERSION_KEY, current, timeout=REBUILD_VERSION_SECONDS)
    if found is not None and found["version"] == current:
        return found
    return None


def answer_cached(
    *, endpoint: str, spec: Spec, compute: Callable[[], Answer], bypass: bool = False
) -> dict[str, Any]:
    """The answer body, from the cache when fresh enough, else computed (and stored).

    ``bypass`` (the client sent ``Cache-Control: no-cache``) skips the lookup but stores the
    fresh answer. A cache that fails is logged and skipped: answers still come. An answer larger
    than ``ANALYTICS_CACHE_MAX_BYTES`` is served but not stored (logged).
    """
    seconds = settings.ANALYTICS_CACHE_SECONDS
    key = answer_key(endpoint=endpoint, spec=spec)
    if seconds > 0 and not bypass:
        try:
            found = _cached_lookup(key)
        except Exception:
            logger.warning("analytics cache unavailable for reads", exc_info=True)
            FAIL_OPEN.labels("analytics_cache_read").inc()
            found = None
        if found is not None:
            ANALYTICS_CACHE.labels("hit").inc()
            body = found["body"]
            return {"results": body["results"], "meta": {**body["meta"], "cached": True}}
    ANALYTICS_CACHE.labels("bypass" if bypass else "miss").inc()
    answer = compute()
    body = answer.body()
    body["meta"]["cached"] = False
    if seconds > 0:
        entry = {"version": answer.version, "body": body}
        # Measured as the cache stores it (pickled); Redis is also the broker, so one answer
        # must not fill it.
        size = len(pickle.dumps(entry, pickle.HIGHEST_PROTOCOL))
        if size > settings.ANALYTICS_CACHE_MAX_BYTES:
            logger.warning(
                "analytics answer not cached: %d bytes is more than ANALYTICS_CACHE_MAX_BYTES "
                "(%d) (%s)",
                size,
                settings.ANALYTICS_CACHE_MAX_BYTES,
                endpoint,
            )
            return body
        try:
            caches["default"].set(key, entry, timeout=seconds)
        except Exception:
            logger.warning("analytics cache unavailable for writes", exc_info=True)
            FAIL_OPEN.labels("analytics_cache_write").inc()
    return body
