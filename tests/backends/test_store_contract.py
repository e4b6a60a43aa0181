"""The `Store` contract, run against MemoryStore and a real Redis."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio

from campaign_express.backends.store import (
    MemoryStore,
    RedisStore,
    Store,
    StoreUnavailable,
    store_from_url,
)


@dataclass
class StoreUnderTest:
    store: Store
    prefix: str
    elapse: Callable[[float], Awaitable[None]]

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis-cluster", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[StoreUnderTest]:
    prefix = f"test:{uuid.uuid4().hex}:"
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        yield StoreUnderTest(store=MemoryStore(clock=clock), prefix=prefix, elapse=advance)
        return
    if request.param == "redis-cluster":
        # One hash tag: the contract's multi-key calls (`get_many`) need one slot.
        prefix = f"test:{{{uuid.uuid4().hex}}}:"
        store = RedisStore(request.getfixturevalue("redis_cluster_url"))
        yield StoreUnderTest(store=store, prefix=prefix, elapse=asyncio.sleep)
        await store.close()
        return
    url = request.getfixturevalue("redis_url")
    store = RedisStore(url)
    yield StoreUnderTest(store=store, prefix=prefix, elapse=asyncio.sleep)
    await store.close()
    cleaner = redis.asyncio.Redis.from_url(url)
    keys = [key async for key in cleaner.scan_iter(match=f"{prefix}*")]
    if keys:
        await cleaner.delete(*keys)
    await cleaner.aclose()


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_get_returns_what_set_stored(backend: StoreUnderTest) -> None:
    key = backend.key("profile")

    assert await backend.store.get(key) is None
    await backend.store.set(key, b'{"v":1}')
    assert await backend.store.get(key) == b'{"v":1}'
    await backend.store.set(key, b'{"v":2}')
    assert await backend.store.get(key) == b'{"v":2}'


async def test_delete_removes_the_key_and_ignores_missing_keys(backend: StoreUnderTest) -> None:
    key = backend.key("gone")
    await backend.store.set(key, b"x")

    await backend.store.delete(key)
    await backend.store.delete(backend.key("never-set"))

    assert await backend.store.get(key) is None


async def test_get_many_keeps_order_and_reports_missing_as_none(backend: StoreUnderTest) -> None:
    await backend.store.set(backend.key("a"), b"1")
    await backend.store.set(backend.key("c"), b"3")

    values = await backend.store.get_many([backend.key("c"), backend.key("b"), backend.key("a")])

    assert values == [b"3", None, b"1"]
    assert await backend.store.get_many([]) == []


async def test_set_with_ttl_expires_and_without_ttl_persists(backend: StoreUnderTest) -> None:
    await backend.store.set(backend.key("short"), b"s", ttl_seconds=1)
    await backend.store.set(backend.key("kept"), b"k")
    assert await backend.store.get(backend.key("short")) == b"s"

    await backend.elapse(1.2)

    assert await backend.store.get(backend.key("short")) is None
    assert await backend.store.get_many([backend.key("short"), backend.key("kept")]) == [
        None,
        b"k",
    ]


async def test_set_without_ttl_clears_an_earlier_ttl(backend: StoreUnderTest) -> None:
    key = backend.key("made-permanent")
    await backend.store.set(key, b"old", ttl_seconds=1)
    await backend.store.set(key, b"new")

    await backend.elapse(1.2)

    assert await backend.store.get(key) == b"new"


async def test_set_rejects_a_ttl_below_one_second(backend: StoreUnderTest) -> None:
    with pytest.raises(ValueError, match="ttl_seconds must be a positive number"):
        await backend.store.set(backend.key("zero"), b"x", ttl_seconds=0)

    assert await backend.store.get(backend.key("zero")) is None


async def test_incr_within_adds_up_to_the_limit_and_refuses_beyond(
    backend: StoreUnderTest,
) -> None:
    key = backend.key("budget")

    assert await backend.store.incr_within(key, 40, limit=100) == 40
    assert await backend.store.incr_within(key, 60, limit=100) == 100
    assert await backend.store.incr_within(key, 1, limit=100) is None
    assert await backend.store.get(key) == b"100"
    assert await backend.store.incr_within(key, -30, limit=100) == 70
    assert await backend.store.get(key) == b"70"


async def test_incr_within_refusal_on_a_new_key_creates_nothing(backend: StoreUnderTest) -> None:
    key = backend.key("too-big")

    assert await backend.store.incr_within(key, 11, limit=10, ttl_seconds=60) is None

    assert await backend.store.get(key) is None


async def test_incr_within_sets_ttl_only_when_creating_the_key(backend: StoreUnderTest) -> None:
    key = backend.key("cap-window")

    assert await backend.store.incr_within(key, 1, limit=5, ttl_seconds=1) == 1
    assert await backend.store.incr_within(key, 1, limit=5, ttl_seconds=3600) == 2
    await backend.elapse(1.2)

    assert await backend.store.get(key) is None
    assert await backend.store.incr_within(key, 1, limit=5) == 1


async def test_incr_within_counts_a_value_written_by_set(backend: StoreUnderTest) -> None:
    key = backend.key("rebuilt-spend")
    await backend.store.set(key, b"7")

    assert await backend.store.incr_within(key, 3, limit=10) == 10


async def test_incr_within_rejects_a_non_integer_value_and_keeps_it(
    backend: StoreUnderTest,
) -> None:
    key = backend.key("not-a-counter")
    await backend.store.set(key, b"1.5")

    with pytest.raises(ValueError, match="does not hold an integer"):
        await backend.store.incr_within(key, 1, limit=10)

    assert await backend.store.get(key) == b"1.5"


async def test_concurrent_incr_within_never_exceeds_the_limit(backend: StoreUnderTest) -> None:
    key = backend.key("frequency-cap")

    results = await asyncio.gather(
        *(backend.store.incr_within(key, 1, limit=150, ttl_seconds=60) for _ in range(200))
    )

    granted = sorted(result for result in results if result is not None)
    assert granted == list(range(1, 151))
    assert results.count(None) == 50
    assert await backend.store.get(key) == b"150"


async def test_concurrent_incr_within_sums_amounts_exactly(backend: StoreUnderTest) -> None:
    key = backend.key("spend-micros")

    results = await asyncio.gather(
        *(backend.store.incr_within(key, 2_500, limit=1_000_000) for _ in range(120))
    )

    assert None not in results
    assert await backend.store.get(key) == b"300000"


async def test_ping_succeeds_on_a_reachable_store(backend: StoreUnderTest) -> None:
    assert await backend.store.ping() is None


async def test_redis_store_without_a_server_raises_store_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{unused_port()}/0", connect_timeout=0.5, timeout=0.5)

    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.get("any")
    with pytest.raises(StoreUnavailable):
        await store.incr_within("any", 1, limit=1)
    await store.close()


async def test_store_from_url_chooses_the_implementation_by_scheme() -> None:
    memory = store_from_url("")
    redis_store = store_from_url("redis://127.0.0.1:6379/15")
    tls_store = store_from_url("rediss://127.0.0.1:6380/0")

    assert type(memory) is MemoryStore
    assert type(redis_store) is RedisStore
    assert type(tls_store) is RedisStore
    await redis_store.close()
    await tls_store.close()


def test_store_from_url_names_an_unsupported_scheme() -> None:
    with pytest.raises(ValueError) as raised:
        store_from_url("memcached://127.0.0.1:11211")

    assert str(raised.value) == (
        "unsupported store URL scheme 'memcached': use redis:// or rediss://"
    )
