"""The pipelined Redis connection under `RedisStore`, against a real Redis (and, for what a
real one will not do, a local server that never answers)."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from campaign_express.backends.redis_wire import (
    RedisClient,
    RedisConnection,
    ReplyError,
    connection_from_url,
)
from campaign_express.backends.store import RedisStore, StoreUnavailable


@pytest.fixture
async def connection(redis_url: str) -> AsyncIterator[RedisConnection]:
    connection = connection_from_url(redis_url, connect_timeout=1.0, timeout=1.0)
    yield connection
    connection.close()


@pytest.fixture
def prefix() -> str:
    return f"test:wire:{uuid.uuid4().hex}:"


@pytest.mark.redis
async def test_concurrent_callers_share_one_connection_and_each_gets_its_reply(
        connection: RedisConnection, prefix: str) -> None:
    await asyncio.gather(*(connection.execute("SET", f"{prefix}{number}", number, "EX", 60)
                           for number in range(200)))

    values = await asyncio.gather(*(connection.execute("GET", f"{prefix}{number}")
                                    for number in range(200)))
    client_ids = await asyncio.gather(*(connection.execute("CLIENT", "ID") for _ in range(20)))

    assert values == [str(number).encode() for number in range(200)]
    assert len(set(client_ids)) == 1


@pytest.mark.redis
async def test_replies_keep_their_types(connection: RedisConnection, prefix: str) -> None:
    await connection.execute("SET", f"{prefix}a", b"\x00bytes", "EX", 60)

    assert await connection.execute("MGET", f"{prefix}a", f"{prefix}missing") == [
        b"\x00bytes", None]
    assert await connection.execute("INCRBY", f"{prefix}n", 5) == 5
    assert await connection.execute("PING") == b"PONG"
    await connection.execute("DEL", f"{prefix}n", f"{prefix}a")


@pytest.mark.redis
async def test_an_error_reply_raises_and_the_connection_goes_on(
        connection: RedisConnection, prefix: str) -> None:
    await connection.execute("SET", f"{prefix}text", b"abc", "EX", 60)

    with pytest.raises(ReplyError, match="not an integer"):
        await connection.execute("INCR", f"{prefix}text")
    assert await connection.execute("GET", f"{prefix}text") == b"abc"


@pytest.mark.redis
async def test_a_script_redis_does_not_know_yet_is_sent_whole_then_run_by_digest(
        connection: RedisConnection, prefix: str) -> None:
    script = f"return {{KEYS[1], ARGV[1], '{uuid.uuid4().hex}'}}".encode()

    client = RedisClient(connection)
    first = await client.evalsha(script, [f"{prefix}k"], [7])
    second = await client.evalsha(script, [f"{prefix}k"], [8])

    assert first[:2] == [f"{prefix}k".encode(), b"7"]
    assert second[:2] == [f"{prefix}k".encode(), b"8"]


@pytest.mark.redis
async def test_a_connection_redis_dropped_is_replaced_on_the_next_command(
        connection: RedisConnection, redis_url: str) -> None:
    client_id = await connection.execute("CLIENT", "ID")
    admin = redis.asyncio.Redis.from_url(redis_url)
    await admin.client_kill_filter(_id=client_id)
    await admin.aclose()
    await asyncio.sleep(0.05)

    assert await connection.execute("PING") == b"PONG"
    assert await connection.execute("CLIENT", "ID") != client_id


@pytest.mark.redis
async def test_the_database_of_the_url_is_selected(redis_url: str, prefix: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    writer = redis.asyncio.Redis.from_url(f"{base}/9")
    await writer.set(f"{prefix}db", b"nine", ex=60)
    await writer.aclose()
    connection = connection_from_url(f"{base}/9", connect_timeout=1.0, timeout=1.0)
    other = connection_from_url(f"{base}/8", connect_timeout=1.0, timeout=1.0)

    assert await connection.execute("GET", f"{prefix}db") == b"nine"
    assert await other.execute("GET", f"{prefix}db") is None
    await connection.execute("DEL", f"{prefix}db")
    connection.close()
    other.close()


async def test_a_redis_that_never_answers_costs_the_timeout_then_store_unavailable() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5, timeout=0.2)
    loop = asyncio.get_running_loop()

    started = loop.time()
    outcomes = await asyncio.gather(store.get("a"), store.get_many(["b", "c"]),
                                    return_exceptions=True)
    elapsed = loop.time() - started

    assert [type(outcome) for outcome in outcomes] == [StoreUnavailable, StoreUnavailable]
    assert 0.15 < elapsed < 0.6
    await store.close()
    server.close()
    await server.wait_closed()


def test_urls_are_read_as_redis_py_reads_them() -> None:
    plain = connection_from_url("redis://cache.internal:6380/4", connect_timeout=1.0,
                                timeout=2.0)
    secured = connection_from_url("rediss://bidder:s%40cret@10.0.0.5/2?ssl_cert_reqs=none",
                                  connect_timeout=1.0, timeout=1.0)
    bare = connection_from_url("redis://localhost", connect_timeout=1.0, timeout=1.0)
    by_query = connection_from_url("redis://localhost:6379/1?db=3", connect_timeout=1.0,
                                   timeout=1.0)

    assert (plain.host, plain.port, plain.db, plain.password, plain.ssl_context) == (
        "cache.internal", 6380, 4, None, None)
    assert (secured.host, secured.port, secured.db, secured.username, secured.password) == (
        "10.0.0.5", 6379, 2, "bidder", "s@cret")
    assert secured.ssl_context is not None
    assert secured.ssl_context.verify_mode == ssl.CERT_NONE
    assert (bare.host, bare.port, bare.db) == ("localhost", 6379, 0)
    assert by_query.db == 3
