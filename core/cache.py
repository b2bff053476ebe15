"""Django's Redis cache backend, keeping one Redis client per connection pool; and counters.

Counters (the throttles') live in Redis when the cache is Redis, in one round trip; otherwise in
the database table ``core_throttlecounter``, one atomic upsert each, so that every process
(gunicorn workers, threads) shares them: a per-process cache would let each worker count on
its own.

Django's ``RedisCacheClient`` builds a new ``redis.Redis`` for every cache call, and redis-py's
constructor sets up its response callbacks each time: about 0.3 ms per call on this project's
machines, as much as the round trip itself. A client only wraps its (thread-safe) connection
pool, so one per pool serves every call.
"""

import time
from collections.abc import Sequence
from typing import Any

from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient
from django.db import connection


class RedisCacheClient(DjangoRedisCacheClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients.get(id(pool))
        if client is None:
            # Pools live as long as this object, so their ids stay theirs.
            client = self._clients[id(pool)] = self._client(  # type: ignore[attr-defined]
                connection_pool=pool
            )
        return client


class RedisCache(DjangoRedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisCacheClient

    def get_many_counting(
        self, keys: Sequence[str], counters: Sequence[tuple[str, int]]
    ) -> tuple[dict[str, Any], list[int]]:
        """``get_many(keys)``, and one added to each ``(key, timeout)`` counter (created at 0 to
        live ``timeout`` seconds: ``INCR`` and ``EXPIRE ... NX``), in one round trip (a
        pipeline without ``MULTI``: every counter's name carries its window, so a counter left
        without its expiry by a dropped connection never counts in a later one).

        From the primary (the counters are writes), where ``get_many`` reads from a replica
        when the cache has several servers.
        """
        made = {self.make_and_validate_key(key): key for key in keys}
        pipe = self._cache.get_client(None, write=True).pipeline(transaction=False)
        for key, timeout in counters:
            counter = self.make_and_validate_key(key)
            pipe.incr(counter)
            pipe.expire(counter, timeout, nx=True)
        if made:
            pipe.mget(list(made))
        results = pipe.execute()
        values = results.pop() if made else []
        loads = self._cache._serializer.loads  # type: ignore[attr-defined]
        found = {
            made[key]: loads(value)
            for key, value in zip(made, values, strict=True)
            if value is not None
        }
        return found, [int(count) for count in results[::2]]


def _counter_table() -> tuple[str, str, str, str]:
    """The quoted names of ``core.models.ThrottleCounter``'s table and columns."""
    from core.models import ThrottleCounter

    quote = connection.ops.quote_name
    return (
        quote(ThrottleCounter._meta.db_table),
        quote("key"),
        quote("count"),
        quote("expires_at"),
    )


def counter_incr(cache: BaseCache, key: str, timeout: int) -> int:
    """Add one to the counter ``key`` and return its new value; a new counter lives ``timeout``
    seconds. In Redis when ``cache`` is Redis, else in the database (shared by all processes)."""
    if isinstance(cache, RedisCache):
        return cache.get_many_counting([], [(key, timeout)])[1][0]
    table, key_column, count_column, expires_column = _counter_table()
    now = time.time()
    with connection.cursor() as cursor:
        # One statement, atomic on SQLite and PostgreSQL alike: concurrent increments queue on
        # the row (or its insert) and each sees its own count.
        cursor.execute(
            f"INSERT INTO {table} ({key_column}, {count_column}, {expires_column}) "
            "VALUES (%s, 1, %s) "
            f"ON CONFLICT ({key_column}) DO UPDATE SET "
            f"{count_column} = CASE WHEN {table}.{expires_column} > %s "
            f"THEN {table}.{count_column} + 1 ELSE 1 END, "
            f"{expires_column} = CASE WHEN {table}.{expires_column} > %s "
            f"THEN {table}.{expires_column} ELSE excluded.{expires_column} END "
            f"RETURNING {count_column}",
            [cache.make_key(key), now + timeout, now, now],
        )
        (count,) = cursor.fetchone()
        if count == 1:
            # A counter just started (at most once per client and window): drop the dead ones,
            # so that the table holds only the live windows.
            cursor.execute(f"DELETE FROM {table} WHERE {expires_column} <= %s", [now])
    return int(count)


def get_many_counting(
    cache: BaseCache, keys: Sequence[str], counters: Sequence[tuple[str, int]]
) -> tuple[dict[str, Any], list[int]]:
    """``cache.get_many(keys)``, and ``counter_incr`` of each ``(key, timeout)`` in
    ``counters`` (their new values, in order): one round trip when ``cache`` is Redis."""
    if isinstance(cache, RedisCache) and counters:
        return cache.get_many_counting(keys, counters)
    counted = [counter_incr(cache, key, timeout) for key, timeout in counters]
    return (cache.get_many(list(keys)) if keys else {}), counted


def counters_incr(cache: BaseCache, counters: Sequence[tuple[str, int]]) -> list[int]:
    """``counter_incr`` of each ``(key, timeout)``: their new values, in one round trip on
    Redis."""
    return get_many_counting(cache, [], counters)[1]


def counters_get(cache: BaseCache, keys: Sequence[str]) -> dict[str, int]:
    """The live counters among ``keys`` (missing or expired ones left out), in one read."""
    if isinstance(cache, RedisCache):
        return {key: int(value) for key, value in cache.get_many(list(keys)).items()}
    table, key_column, count_column, expires_column = _counter_table()
    made = {cache.make_key(key): key for key in keys}
    placeholders = ", ".join(["%s"] * len(made))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {key_column}, {count_column} FROM {table} "
            f"WHERE {key_column} IN ({placeholders}) AND {expires_column} > %s",
            [*made, time.time()],
        )
        return {made[made_key]: int(count) for made_key, count in cursor.fetchall()}
