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
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.renderers import JSONRenderer

from api.exports import csv_chunks
from api.permissions import Counts, throttle_failed_open
from api.selectors import Answer
from api.spec import Spec
from core.cache import get_many_counting
from core.metrics import ANALYTICS_CACHE, FAIL_OPEN
from core.routers import analytics_read_source, reading_from
from rollups.selectors import (
    REBUILD_VERSION_KEY,
    REBUILD_VERSION_SECONDS,
    rebuild_version,
    rebuild_version_cached,
)

logger = logging.getLogger(__name__)
# A request no throttle counts (or already counted).
NO_COUNTS = Counts()


def answer_key(*, endpoint: str, spec: Spec) -> str:
    """Endpoint + normalized filters (``answer``: the entries hold rendered JSON; processes
    of a release that stored bodies look elsewhere)."""
    filters = json.dumps(spec.normalized(), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(filters.encode()).hexdigest()[:32]
    return f"analytics:answer:{endpoint}:{digest}"


class Answered:
    """An answer's body, and its JSON as the read API sends it.

    The cache stores the JSON, rendered once when the answer is stored (with ``cached`` true:
    a stored answer is only ever sent from the cache), so a hit sends those bytes as they are,
    without unpickling rows nor rendering them (a 100-row breakdown: about 0.1 ms of a 1.5 ms
    answer). The body is parsed from them only where a request needs it (CSV, a GET's ETag).
    """

    def __init__(
        self,
        *,
        body: dict[str, Any] | None = None,
        rendered: bytes | None = None,
        digest: str | None = None,
        csv: bytes | None = None,
    ) -> None:
        if (body is None) == (rendered is None):
            raise ValueError("an answer is a body or its rendered JSON")
        self._body = body
        self._rendered = rendered
        # What the cache kept beside the JSON, when it did: the answer's content digest (its
        # ETags come from it) and its rows as CSV.
        self.digest = digest
        self.csv = csv

    @cached_property
    def body(self) -> dict[str, Any]:
        if self._body is not None:
            return self._body
        body: dict[str, Any] = json.loads(self.rendered)
        return body

    @cached_property
    def rendered(self) -> bytes:
        """The body as ``JSONRenderer`` renders it (compact, UTF-8)."""
        if self._rendered is not None:
            return self._rendered
        return JSONRenderer().render(self._body)


class AnsweredJSONRenderer(JSONRenderer):
    """DRF's JSON renderer, sending an ``Answered``'s JSON as it is (unless the client asked
    for indented JSON: ``Accept: application/json; indent=4``)."""

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, Answered):
            if self.get_indent(accepted_media_type or "", renderer_context or {}) is None:
                return data.rendered
            data = data.body
        rendered: bytes = super().render(data, accepted_media_type, renderer_context)
        return rendered


def _cached_lookup(key: str, counts: Counts) -> tuple[dict[str, Any] | None, list[int]]:
    """The cached entry for ``key`` if it was computed at the current rebuild version, and the
    new values of ``counts``' counters, added in the same round trip (with Redis)."""
    cache = caches["default"]
    current: int | None
    if not rebuild_version_cached():
        both, used = get_many_counting(cache, [key], counts.counters())
        current = rebuild_version()
    else:
        both, used = get_many_counting(cache, [REBUILD_VERSION_KEY, key], counts.counters())
        current = both.get(REBUILD_VERSION_KEY)
        if current is None:
            current = rebuild_version()
            # add, not set: a newer version published meanwhile must win.
            cache.add(REBUILD_VERSION_KEY, current, timeout=REBUILD_VERSION_SECONDS)
    found = both.get(key)
    if found is not None and found["version"] == current:
        return found, used
    return None, used


def _looked_up(
    lookup: Callable[[], tuple[Any, list[int]]],
    counts: Counts,
    *,
    what: str,
    failure: str | None = None,
) -> Any:
    """What ``lookup()`` found in the cache, once the throttle ``counts`` it added are checked
    (``Throttled`` past a limit). A cache that fails is logged (counted as ``failure`` when
    given) and skipped, for the answer and the throttles alike."""
    used: list[int] | None
    try:
        found, used = lookup()
    except Exception:
        logger.warning("%s cache unavailable for reads", what, exc_info=True)
        if failure is not None:
            FAIL_OPEN.labels(failure).inc()
        if counts.pending:
            throttle_failed_open()
        found, used = None, None
    counts.check(used)
    return found


def answer_cached(
    *,
    endpoint: str,
    spec: Spec,
    compute: Callable[[], Answer],
    bypass: bool = False,
    counts: Counts = NO_COUNTS,
    tagged: bool = False,
    csv_columns: list[str] | None = None,
) -> Answered:
    """The answer, from the cache when fresh enough, else computed (and stored).

    ``bypass`` (the client sent ``Cache-Control: no-cache``) skips the lookup but stores the
    fresh answer. An answer not taken from the cache is computed on the read replica when one is
    configured (``core.routers``), a ``bypass`` one always on the primary, which alone has
    every view committed before the request. A cache that fails is logged and skipped: answers
    still come. An answer larger than ``ANALYTICS_CACHE_MAX_BYTES`` is served but not stored
    (logged). The request's throttle ``counts`` are added in the lookup's round trip (or alone,
    without a lookup) and checked before anything else: past a limit, ``Throttled``.

    A computed answer is stored with what the request needs again on a hit: its content digest
    when ``tagged`` (a GET's ETag), its rows as CSV under ``csv_columns`` (a CSV export), so that
    a hit neither parses nor re-encodes the rows (in-process, a 1,000-row CSV from the cache
    6.2 -> 1.1 ms, a GET of its JSON 3.9 -> 1.0 ms, a 304 3.7 -> 0.9 ms).
    """
    seconds = settings.ANALYTICS_CACHE_SECONDS
    key = answer_key(endpoint=endpoint, spec=spec)
    if seconds > 0 and not bypass:
        found = _looked_up(
            lambda: _cached_lookup(key, counts),
            counts,
            what="analytics",
            failure="analytics_cache_read",
        )
        if found is not None:
            ANALYTICS_CACHE.labels("hit").inc()
            return Answered(
                rendered=found["json"], digest=found.get("digest"), csv=found.get("csv")
            )
    else:
        counts.add()
    ANALYTICS_CACHE.labels("bypass" if bypass else "miss").inc()
    # On a read replica when one is configured, except for no-cache reads (read-your-writes).
    with reading_from(analytics_read_source(fresh=bypass)):
        answer = compute()
    body = answer.body()
    digest = answer_digest(endpoint=endpoint, body=body) if tagged else None
    csv = None
    if seconds > 0:
        body["meta"]["cached"] = True
        entry: dict[str, Any] = {"version": answer.version, "json": Answered(body=body).rendered}
        if digest is not None:
            entry["digest"] = digest
        # Measured as the cache stores it (pickled); Redis is also the broker, so one answer
        # must not fill it. The CSV goes with the JSON only while both fit (a larger one
        # streams row by row, never whole in memory).
        size = len(pickle.dumps(entry, pickle.HIGHEST_PROTOCOL))
        if csv_columns is not None and size <= settings.ANALYTICS_CACHE_MAX_BYTES:
            csv = b"".join(csv_chunks(csv_columns, body["results"]))
            with_csv = {**entry, "csv": csv}
            size_with_csv = len(pickle.dumps(with_csv, pickle.HIGHEST_PROTOCOL))
            if size_with_csv <= settings.ANALYTICS_CACHE_MAX_BYTES:
                entry, size = with_csv, size_with_csv
        if size > settings.ANALYTICS_CACHE_MAX_BYTES:
            logger.warning(
                "analytics answer not cached: %d bytes is more than ANALYTICS_CACHE_MAX_BYTES "
                "(%d) (%s)",
                size,
                settings.ANALYTICS_CACHE_MAX_BYTES,
                endpoint,
            )
        else:
            try:
                caches["default"].set(key, entry, timeout=seconds)
            except Exception:
                logger.warning("analytics cache unavailable for writes", exc_info=True)
                FAIL_OPEN.labels("analytics_cache_write").inc()
    body["meta"]["cached"] = False
    return Answered(body=body, digest=digest, csv=csv)


def realtime_cached(
    *,
    spec: Spec,
    compute: Callable[[], dict[str, Any]],
    bypass: bool = False,
    counts: Counts = NO_COUNTS,
) -> dict[str, Any]:
    """The realtime answer, from the cache when at most ``REALTIME_CACHE_SECONDS`` old.

    Its rows come from the raw views, which a rebuild does not change: no version to check.
    ``bypass``, ``counts`` and a cache that fails as in ``answer_cached``.
    """
    seconds = settings.REALTIME_CACHE_SECONDS
    key = answer_key(endpoint="realtime", spec=spec)
    if seconds > 0 and not bypass:

        def lookup() -> tuple[Any, list[int]]:
            both, used = get_many_counting(caches["default"], [key], counts.counters())
            return both.get(key), used

        found = _looked_up(lookup, counts, what="realtime")
        if found is not None:
            return {"results": found["results"], "meta": {**found["meta"], "cached": True}}
    else:
        counts.add()
    with reading_from(analytics_read_source(fresh=bypass)):
        body = compute()
    body["meta"]["cached"] = False
    if seconds > 0:
        try:
            caches["default"].set(key, body, timeout=seconds)
        except Exception:
            logger.warning("realtime cache unavailable for writes", exc_info=True)
    return body


def answer_digest(*, endpoint: str, body: dict[str, Any]) -> str:
    """What an answer says (rows, filters, totals, comparison range...), not when it was
    computed, as a digest: the same for every computation of the same answer.

    ``as_of`` and ``cached`` change with every computation of the same answer and are left out.
    """
    meta = {key: value for key, value in body["meta"].items() if key not in ("as_of", "cached")}
    content = json.dumps(
        [endpoint, body["results"], meta], sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(content.encode()).hexdigest()


def answer_etag(*, digest: str, media_type: str) -> str:
    """A weak ETag of an answer of content ``digest`` (``answer_digest``) as ``media_type``.

    A client that revalidates gets a 304 while the rows are the same. The ETag is weak (``W/``):
    two answers that share it may differ in ``as_of`` and ``cached``. The format is part of it
    (the CSV and the JSON of one answer are different representations).
    """
    tag = hashlib.sha256(f"{media_type}\n{digest}".encode()).hexdigest()[:32]
    return f'W/"{tag}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, RFC 9110 13.1.2)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(
        tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(",") if tag.strip()
    )
