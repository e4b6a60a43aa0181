"""Key-value store for profiles, frequency caps and budget counters.

The bid path reads and counts through this interface on every request, so it is asyncio only
and Django-free. `RedisStore` is the production implementation (shared by every bidder);
`MemoryStore` serves embedded mode, where one process holds all state. Both pass
`tests/backends/test_store_contract.py`.

Counters are decimal integers stored as bytes (what Redis INCRBY keeps), so a value written by
one implementation reads the same in the other and `get` of a counter returns e.g. ``b"42"``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, cast
from urllib.parse import urlsplit

from campaign_express.backends.redis_wire import ReplyError, client_from_url

_INTEGER = re.compile(rb"-?[0-9]+")

# KEYS[1] counter; ARGV amount, limit, ttl seconds (0: none). Returns the new value, or nil when
# it would exceed the limit. Runs inside Redis, so check and add cannot interleave with another
# bidder's; the TTL is set only by the call that creates the key, so a cap window never slides.
_INCR_WITHIN_LUA = """
local current = redis.call('GET', KEYS[1])
local value = 0
if current then
  if not string.match(current, '^%-?%d+$') then
    return redis.error_reply('ERR value is not an integer')
  end
  value = tonumber(current)
end
local updated = value + tonumber(ARGV[1])
if updated > tonumber(ARGV[2]) then
  return false
end
if current then
  return redis.call('INCRBY', KEYS[1], ARGV[1])
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return tonumber(ARGV[1])
"""
_INCR_WITHIN_SCRIPT = _INCR_WITHIN_LUA.encode()


class ScriptContext(Protocol):
    """What a script's Python twin may do: the same integer-counter operations its Lua uses."""

    def get(self, key: str) -> int: ...  # 0 when missing

    def incrby(self, key: str, amount: int, ttl_seconds: int | None = None) -> int: ...

    def set(self, key: str, value: int, ttl_seconds: int | None = None) -> None: ...

    def delete(self, key: str) -> bool: ...  # True when it existed


@dataclass(frozen=True)
class Script:
    """An atomic multi-key operation: Lua for Redis and a Python twin for `MemoryStore`.

    The two must agree: `tests/backends/test_store_contract.py` runs each script of the
    project against both stores. Keys of one call must share a Redis Cluster hash tag.
    `incrby` with a TTL sets it on every call (Lua: INCRBY then EXPIRE).
    """

    name: str
    lua: str
    twin: Callable[[ScriptContext, Sequence[str], Sequence[int]], int]

    @property
    def encoded(self) -> bytes:
        return self.lua.encode()


class StoreUnavailable(Exception):
    """The store could not be reached in time; callers fail closed (no bid on capped campaigns)."""


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def set(self, key: str, value: bytes, *, ttl_seconds: int | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def incr_within(
        self, key: str, amount: int, *, limit: int, ttl_seconds: int | None = None
    ) -> int | None:
        """Add `amount` if the result stays <= `limit`; the new value, or None and no change."""
        ...

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[int]) -> int: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def _check_ttl(ttl_seconds: int | None) -> None:
    if ttl_seconds is not None and ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be a positive number of seconds, got {ttl_seconds}")


class MemoryStore:
    """The store for embedded mode: one process, no network.

    Expiry is checked against `clock` (monotonic seconds) so tests can move time instead of
    sleeping. Expired entries are dropped when read and by a sweep at most once a minute, so
    keys written once and never read again (frequency caps of users never seen again) do not
    grow the process forever. A lock keeps it correct if a thread outside the event loop
    shares it.
    """

    _SWEEP_INTERVAL_SECONDS = 60.0

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[bytes, float | None]] = {}
        self._lock = threading.Lock()
        self._next_sweep = clock() + self._SWEEP_INTERVAL_SECONDS

    def _read(self, key: str, now: float) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at is not None and now >= expires_at:
            del self._entries[key]
            return None
        return value

    def _write(self, key: str, value: bytes, expires_at: float | None, now: float) -> None:
        self._entries[key] = (value, expires_at)
        if now >= self._next_sweep:
            self._next_sweep = now + self._SWEEP_INTERVAL_SECONDS
            expired = [k for k, (_, at) in self._entries.items() if at is not None and now >= at]
            for expired_key in expired:
                del self._entries[expired_key]

    async def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._read(key, self._clock())

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
            now = self._clock()
            return [self._read(key, now) for key in keys]

    async def set(self, key: str, value: bytes, *, ttl_seconds: int | None = None) -> None:
        _check_ttl(ttl_seconds)
        with self._lock:
            now = self._clock()
            expires_at = None if ttl_seconds is None else now + ttl_seconds
            self._write(key, bytes(value), expires_at, now)

    async def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    async def incr_within(
        self, key: str, amount: int, *, limit: int, ttl_seconds: int | None = None
    ) -> int | None:
        _check_ttl(ttl_seconds)
        with self._lock:
            now = self._clock()
            current = self._read(key, now)
            if current is not None and not _INTEGER.fullmatch(current):
                raise ValueError(f"{key!r} does not hold an integer")
            updated = (0 if current is None else int(current)) + amount
            if updated > limit:
                return None
            if current is None:
                expires_at = None if ttl_seconds is None else now + ttl_seconds
            else:
                expires_at = self._entries[key][1]
            self._write(key, str(updated).encode(), expires_at, now)
            return updated

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[int]) -> int:
        with self._lock:
            return script.twin(_MemoryContext(self, self._clock()), keys, args)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _MemoryContext:
    """`ScriptContext` over a MemoryStore's entries; used under its lock, so atomic."""

    def __init__(self, store: MemoryStore, now: float) -> None:
        self._store = store
        self._now = now

    def get(self, key: str) -> int:
        value = self._store._read(key, self._now)
        return 0 if value is None else int(value)

    def incrby(self, key: str, amount: int, ttl_seconds: int | None = None) -> int:
        current = self._store._read(key, self._now)
        updated = (0 if current is None else int(current)) + amount
        if ttl_seconds is not None:
            expires_at: float | None = self._now + ttl_seconds
        else:
            expires_at = self._store._entries[key][1] if current is not None else None
        self._store._write(key, str(updated).encode(), expires_at, self._now)
        return updated

    def set(self, key: str, value: int, ttl_seconds: int | None = None) -> None:
        expires_at = None if ttl_seconds is None else self._now + ttl_seconds
        self._store._write(key, str(value).encode(), expires_at, self._now)

    def delete(self, key: str) -> bool:
        existed = self._store._read(key, self._now) is not None
        self._store._entries.pop(key, None)
        return existed


@contextmanager
def _unavailable_on_error() -> Iterator[None]:
    try:
        yield
    except OSError as error:  # ConnectionError and TimeoutError included
        raise StoreUnavailable(f"redis: {error}") from error


class RedisStore:
    """The production store: one Redis shared by all bidders.

    Every call has a connect and a read timeout and is sent once more if its connection was
    lost (one Redis dropped while idle), then raises `StoreUnavailable`, so a Redis outage
    costs the bid path milliseconds, never the exchange's whole `tmax`. Commands from all
    concurrent callers share one pipelined connection (`redis_wire`): Redis runs them one at
    a time anyway, and a pool's checkout and bookkeeping cost more CPU than the command.
    The URL may name any node of a Redis Cluster (database 0): commands then go to their
    slot's master (`redis_wire.RedisClient`); `get_many` keys must share a hash tag.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
    ) -> None:
        self._redis = client_from_url(url, connect_timeout=connect_timeout, timeout=timeout)

    async def get(self, key: str) -> bytes | None:
        with _unavailable_on_error():
            return cast("bytes | None", await self._redis.execute("GET", key))

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        with _unavailable_on_error():
            return cast("list[bytes | None]", await self._redis.execute("MGET", *keys))

    async def set(self, key: str, value: bytes, *, ttl_seconds: int | None = None) -> None:
        _check_ttl(ttl_seconds)
        with _unavailable_on_error():
            if ttl_seconds is None:
                await self._redis.execute("SET", key, value)
            else:
                await self._redis.execute("SET", key, value, "EX", ttl_seconds)

    async def delete(self, key: str) -> None:
        with _unavailable_on_error():
            await self._redis.execute("DEL", key)

    async def incr_within(
        self, key: str, amount: int, *, limit: int, ttl_seconds: int | None = None
    ) -> int | None:
        _check_ttl(ttl_seconds)
        with _unavailable_on_error():
            try:
                result = await self._redis.evalsha(_INCR_WITHIN_SCRIPT, [key],
                                                   [amount, limit, ttl_seconds or 0])
            except ReplyError as error:
                if "not an integer" in str(error):
                    raise ValueError(f"{key!r} does not hold an integer") from error
                raise
        return None if result is None else int(result)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[int]) -> int:
        with _unavailable_on_error():
            return int(await self._redis.evalsha(script.encoded, list(keys), list(args)))

    async def ping(self) -> None:
        with _unavailable_on_error():
            await self._redis.execute("PING")

    async def close(self) -> None:
        self._redis.close()


def store_from_url(url: str) -> Store:
    """Empty URL: the in-process store (embedded mode); `redis://` or `rediss://`: Redis."""
    if not url:
        return MemoryStore()
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss"):
        return RedisStore(url)
    raise ValueError(f"unsupported store URL scheme {scheme!r}: use redis:// or rediss://")
