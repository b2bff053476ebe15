import os

import pytest
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache

from core.cache import RedisCache, counter_incr

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


def test_local_memory_counters_count() -> None:
    local = LocMemCache("counter-test", {})
    assert [counter_incr(local, "hits", 30) for _ in range(3)] == [1, 2, 3]
