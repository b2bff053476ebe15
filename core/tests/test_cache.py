import os
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from core.cache import RedisCache, counter_incr, counters_get, counters_incr, get_many_counting
from core.models import ThrottleCounter

REDIS_URL = os.environ.get("REDIS_URL")


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL (a real Redis)")
def test_the_redis_cache_keeps_one_client_per_pool_and_works() -> None:
    cache = RedisCache(REDIS_URL or "", {"KEY_PREFIX": "test-core-cache"})
    client = cache._cache.get_client(write=True)
    assert cache._cache.get_client() is client
    cache.set("answer", {"views": 42}, timeout=5)
    assert cache.get("answer") == {"views": 42}
    assert cache.get_many(["answer", "missing"]) == {"answer": {"views": 42}}
    cache.delete("answer")
    assert cache.get("answer") is None


@pytest.mark.skipif(not REDIS_URL, reason="the project's cache is Redis only with REDIS_URL")
def test_the_project_cache_is_this_backend() -> None:
    assert isinstance(caches["default"], RedisCache)


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL (a real Redis)")
def test_redis_counters_count_and_expire() -> None:
    cache = RedisCache(REDIS_URL or "", {"KEY_PREFIX": "test-core-counter"})
    cache.delete("hits")
    assert [counter_incr(cache, "hits", 30) for _ in range(3)] == [1, 2, 3]
    ttl = cache._cache.get_client().ttl(cache.make_key("hits"))
    assert 0 < ttl <= 30  # set by the first increment, not pushed back by the others
    cache.delete("hits")


@pytest.mark.django_db
def test_without_redis_counters_live_in_the_database_and_expire() -> None:
    # A per-process cache would give each gunicorn worker counters of its own.
    local = LocMemCache("counter-test", {})
    with time_machine.travel(datetime(2026, 3, 1, 12, 0, tzinfo=UTC), tick=False) as clock:
        assert [counter_incr(local, "hits", 30) for _ in range(3)] == [1, 2, 3]
        assert counter_incr(local, "other", 30) == 1
        assert local.get("hits") is None  # not in the process's cache
        assert dict(ThrottleCounter.objects.values_list("key", "count")) == {
            local.make_key("hits"): 3,
            local.make_key("other"): 1,
        }
        assert counters_get(local, ["hits", "other", "missing"]) == {"hits": 3, "other": 1}

        clock.shift(timedelta(seconds=31))
        assert counters_get(local, ["hits"]) == {}
        assert counter_incr(local, "hits", 30) == 1  # a new counter, and the dead one is gone
        assert list(ThrottleCounter.objects.values_list("key", flat=True)) == [
            local.make_key("hits")
        ]


@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL (a real Redis)")
def test_redis_counters_read_back_in_one_call() -> None:
    cache = RedisCache(REDIS_URL or "", {"KEY_PREFIX": "test-core-counter-get"})
    cache.delete_many(["a", "b"])
    counter_incr(cache, "a", 30)
    counter_incr(cache, "a", 30)
    assert counters_get(cache, ["a", "b"]) == {"a": 2}
    cache.delete("a")


@pytest.mark.django_db
@pytest.mark.parametrize("backend", ["redis", "local"])
def test_values_and_counters_come_back_together(backend: str) -> None:
    # The analytics lookup: cached values and the throttles' counters in one call (one round
    # trip on Redis; a read and a counter upsert elsewhere), each counter expiring on its own.
    if backend == "redis" and not REDIS_URL:
        pytest.skip("needs REDIS_URL (a real Redis)")
    cache = (
        RedisCache(REDIS_URL or "", {"KEY_PREFIX": "test-core-counting"})
        if backend == "redis"
        else LocMemCache("counting-test", {})
    )
    cache.delete_many(["answer", "user", "key"])
    cache.set("answer", {"views": 7}, timeout=30)
    assert get_many_counting(cache, ["answer", "missing"], [("user", 30), ("key", 60)]) == (
        {"answer": {"views": 7}},
        [1, 1],
    )
    assert get_many_counting(cache, ["missing"], [("user", 30)]) == ({}, [2])
    assert get_many_counting(cache, ["answer"], []) == ({"answer": {"views": 7}}, [])
    assert counters_incr(cache, [("user", 30), ("key", 60)]) == [3, 2]
    assert counters_get(cache, ["user", "key"]) == {"user": 3, "key": 2}
    if isinstance(cache, RedisCache):
        client = cache._cache.get_client()
        assert 0 < client.ttl(cache.make_key("user")) <= 30
        assert 30 < client.ttl(cache.make_key("key")) <= 60
        cache.delete_many(["answer", "user", "key"])
