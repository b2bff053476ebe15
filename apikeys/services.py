"""Checking an API key on every request without a database query, and forgetting it at once when
the key or its user changes.

A key is ``<prefix>.<secret>`` (djangorestframework-api-key's format: 8 + 32 random letters and
digits). What a request needs to know about a key (its SHA-512 hash, scope, user, author
restriction, expiry; a plain dict, so that an entry another version of the code wrote is
read again rather than misread) is kept in Django's cache under its public prefix for
``API_KEY_CACHE_SECONDS``; each request hashes the key it was sent (SHA-512: about a
microsecond, unlike a password hasher) and compares in constant time. Saving or deleting a key,
or saving its user, deletes that entry, so a revoke applies to the next request (with Redis; a
cache per process, the embedded default, forgets it in the other processes within
``API_KEY_CACHE_SECONDS``). Prefixes that match no usable key are cached too, so that a client
sending a wrong key costs a query per ``API_KEY_CACHE_SECONDS``, not per request.

``last_used_at`` is written at most once a minute per key (a cache ``add`` per minute window
elects the writer), never on every request.
"""

import dataclasses
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.db.models import Q
from django.utils import timezone

from apikeys.models import ApiKey
from core.throttling import window_current

logger = logging.getLogger(__name__)

# djangorestframework-api-key's KeyGenerator: get_random_string(8) "." get_random_string(32).
_KEY = re.compile(r"(?P<prefix>[A-Za-z0-9]{8})\.[A-Za-z0-9]{1,128}")
# How often last_used_at is written at most, per key.
LAST_USED_SECONDS = 60
_MISSING = "missing"


class ApiKeyInvalid(Exception):
    """The key was refused; ``str()`` says why, for the 401."""


@dataclass(frozen=True)
class ApiKeyGrant:
    """What a valid key allows: the ``request.auth`` of a request authenticated with one."""

    prefix: str
    name: str
    hashed_key: str
    scope: str
    user_id: int
    username: str
    # The author every read is restricted to, by username; None = every author.
    author: str | None
    expires_at: datetime | None
    last_used_at: datetime | None

    @property
    def can_read(self) -> bool:
        return self.scope in (ApiKey.Scope.READ, ApiKey.Scope.INGEST_READ)

    @property
    def can_ingest(self) -> bool:
        return self.scope in (ApiKey.Scope.INGEST, ApiKey.Scope.INGEST_READ)


def api_key_grant(request: Any) -> ApiKeyGrant | None:
    """The grant of a DRF request authenticated with an API key, else ``None``."""
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, ApiKeyGrant) else None


def _cache_key(prefix: str) -> str:
    return f"apikey:{prefix}"


def _grant_load(prefix: str) -> ApiKeyGrant | None:
    """The usable key with this prefix from the database (one query), or ``None``."""
    key = (
        ApiKey.objects.filter(prefix=prefix, revoked=False, user__is_active=True)
        .select_related("user", "author")
        .first()
    )
    if key is None:
        return None
    return ApiKeyGrant(
        prefix=key.prefix,
        name=key.name,
        hashed_key=key.hashed_key,
        scope=key.scope,
        user_id=key.user_id,
        username=key.user.get_username(),
        author=key.author.get_username() if key.author is not None else None,
        expires_at=key.expiry_date,
        last_used_at=key.last_used_at,
    )


def _grant_lookup(prefix: str) -> tuple[ApiKeyGrant | None, bool]:
    """``(grant or None, whether the cache works)``: from the cache, else the database."""
    cache = caches["default"]
    try:
        found: Any = cache.get(_cache_key(prefix))
    except Exception:
        logger.warning("API key cache unavailable; key read from the database", exc_info=True)
        return _grant_load(prefix), False
    if found == _MISSING:
        return None, True
    if isinstance(found, dict):
        try:
            return ApiKeyGrant(**found), True
        except TypeError:
            pass  # an entry written by another version of this code: read the key again
    grant = _grant_load(prefix)
    try:
        cache.set(
            _cache_key(prefix),
            dataclasses.asdict(grant) if grant is not None else _MISSING,
            timeout=settings.API_KEY_CACHE_SECONDS,
        )
    except Exception:
        logger.warning("API key cache unavailable for writes", exc_info=True)
        return grant, False
    return grant, True


def _last_used_record(grant: ApiKeyGrant, *, now: datetime, cache_ok: bool) -> None:
    """Write ``last_used_at`` if it is a minute old: at most once a minute across processes."""
    if grant.last_used_at is not None and now - grant.last_used_at < timedelta(
        seconds=LAST_USED_SECONDS
    ):
        return
    cache = caches["default"]
    if cache_ok:
        # Processes may hold the same stale entry: the first request of each minute window
        # wins the right to write (a counter per window, as the throttles count).
        window, _ = window_current(LAST_USED_SECONDS)
        try:
            elected = cache.add(
                f"apikey-used:{grant.prefix}:{window}", 1, timeout=LAST_USED_SECONDS
            )
        except Exception:
            logger.warning("API key cache unavailable; last use not recorded", exc_info=True)
            return
        if not elected:
            return
    ApiKey.objects.filter(prefix=grant.prefix).update(last_used_at=now)
    if cache_ok:
        try:
            cache.set(
                _cache_key(grant.prefix),
                dataclasses.asdict(dataclasses.replace(grant, last_used_at=now)),
                timeout=settings.API_KEY_CACHE_SECONDS,
            )
        except Exception:
            logger.warning("API key cache unavailable for writes", exc_info=True)


def api_key_authenticate(*, key: str) -> ApiKeyGrant:
    """The grant of a valid, unexpired, unrevoked key of an active user; else ``ApiKeyInvalid``.

    No database query while the key is cached, except the ``last_used_at`` write once a minute.
    """
    match = _KEY.fullmatch(key)
    if match is None:
        raise ApiKeyInvalid("Malformed API key: expected <prefix>.<secret> as issued.")
    grant, cache_ok = _grant_lookup(match["prefix"])
    if grant is None or not ApiKey.objects.key_generator.verify(key, grant.hashed_key):
        raise ApiKeyInvalid("Invalid API key (unknown, revoked, or of an inactive user).")
    now = timezone.now()
    if grant.expires_at is not None and grant.expires_at <= now:
        raise ApiKeyInvalid(f"API key expired at {grant.expires_at.isoformat()}.")
    _last_used_record(grant, now=now, cache_ok=cache_ok)
    return grant


def api_key_create(
    *,
    name: str,
    user: Any,
    scope: str = ApiKey.Scope.READ,
    author: Any = None,
    expiry_date: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key and its secret (shown once: only its hash is stored)."""
    key = ApiKey(name=name, user=user, scope=scope, author=author, expiry_date=expiry_date)
    key.full_clean(exclude=["id", "prefix", "hashed_key"])
    secret = ApiKey.objects.assign_key(key)
    key.save()
    return key, secret


def api_key_forget(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    """``post_save``/``post_delete`` of a key: drop its cache entry."""
    _forget([instance.prefix])


def api_keys_of_user_forget(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_save`` of a user: drop the entries of the keys it owns or is the author of."""
    if kwargs.get("created"):
        return
    prefixes = ApiKey.objects.filter(Q(user=instance) | Q(author=instance)).values_list(
        "prefix", flat=True
    )
    _forget(list(prefixes))


def _forget(prefixes: list[str]) -> None:
    if not prefixes:
        return
    try:
        caches["default"].delete_many([_cache_key(prefix) for prefix in prefixes])
    except Exception:
        # The entries then live out API_KEY_CACHE_SECONDS.
        logger.warning("API key cache unavailable; entries not dropped", exc_info=True)


def api_keys_revoke(*, prefixes: list[str]) -> int:
    """Revoke these keys (for good) and drop their cache entries; how many were usable."""
    revoked = ApiKey.objects.filter(prefix__in=prefixes, revoked=False).update(revoked=True)
    _forget(prefixes)
    return revoked
