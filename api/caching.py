"""Redis (Django's cache) in front of the planner, failing open when the cache is down."""

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache

from api.planner import rebuild_version
from api.selectors import Answer
from api.spec import Spec

logger = logging.getLogger(__name__)


def answer_key(*, endpoint: str, spec: Spec, version: int) -> str:
    """Endpoint + normalized filters + the rebuild version: a rebuild changes every key."""
    filters = json.dumps(spec.normalized(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(filters.encode()).hexdigest()[:32]
    return f"analytics:{endpoint}:v{version}:{digest}"


def answer_cached(
    *, endpoint: str, spec: Spec, compute: Callable[[], Answer], bypass: bool = False
) -> dict[str, Any]:
    """The answer body, from the cache when fresh enough, else computed (and stored).

    ``bypass`` (the client sent ``Cache-Control: no-cache``) skips the lookup but stores the
    fresh answer. A cache that fails is logged and skipped: answers still come.
    """
    seconds = settings.ANALYTICS_CACHE_SECONDS
    key = answer_key(endpoint=endpoint, spec=spec, version=rebuild_version())
    if seconds > 0 and not bypass:
        try:
            found = cache.get(key)
        except Exception:
            logger.warning("analytics cache unavailable for reads", exc_info=True)
            found = None
        if found is not None:
            return {"results": found["results"], "meta": {**found["meta"], "cached": True}}
    body = compute().body()
    body["meta"]["cached"] = False
    if seconds > 0:
        try:
            cache.set(key, body, timeout=seconds)
        except Exception:
            logger.warning("analytics cache unavailable for writes", exc_info=True)
    return body
