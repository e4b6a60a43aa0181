"""One Redis connection that carries many commands at once: what `RedisStore` talks through.

The bid path makes one or two Redis calls per request (frequency caps, the budget hold), from
many concurrent requests. Through redis-py's asyncio client each call cost about 220 µs of
CPU on the event loop (pool checkout, retry and timeout wrappers, stream reader), against
37 µs for the same GET written here (BENCHMARKS.md, "Bidder under load"): at a thousand
requests a second that difference is a third of a core.

So commands are pipelined on one connection: each call packs its command (hiredis), queues a
future and writes; the replies come back in the order the commands were sent, and the
protocol hands each to the next future in line. Writes made in the same turn of the event
loop go out in one system call. Replies are parsed by hiredis.

Failure behaviour matches what the store promises: a command that gets no reply within
``timeout`` fails with TimeoutError, and so does every command sent after it on that
connection, which is dropped (a Redis that does not answer one will not answer those); a
connection that is lost fails every command waiting on it with ConnectionError; the next
command opens a new connection. A command whose connection was lost is sent once more on a
fresh connection (Redis may drop an idle one), never after a timeout, so an unreachable
Redis costs a caller at most its connect and read timeouts.

`RedisClient` adds Redis Cluster on top: pointed at any node of a Cluster it learns so from the
first `MOVED` reply and routes each command to its slot's master from then on (see there).

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import hashlib
import socket
import ssl
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis


class ReplyError(Exception):
    """Redis answered the command with an error (wrong type, NOSCRIPT, a script's error)."""


class _Protocol(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        """Queue ``command``; the future gets its reply. Commands queued in one turn of the
        loop are written together at its end."""
        future = self.loop.create_future()
        self._waiting.append(future)
        if not self._outgoing:
            self.loop.call_soon(self._flush)
        self._outgoing.append(command)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.transport is not None and not self.closed:
            self.transport.writelines(outgoing)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._waiting:
                    raise hiredis.ProtocolError("a reply no command waits for")
                future = self._waiting.popleft()
                if not future.done():  # a command that timed out still takes its reply
                    future.set_result(reply)
        except hiredis.ProtocolError as error:
            self.fail(ConnectionError(f"redis protocol error: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        error = ConnectionError(f"redis connection lost: {exc}" if exc else
                                "redis connection closed")
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def fail(self, error: Exception) -> None:
        """Close the connection; every command still waiting gets ``error``."""
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)
        if self.transport is not None:
            self.transport.abort()


def _expire(protocol: _Protocol, future: asyncio.Future[Any], timeout: float) -> None:
    if not future.done():
        # Redis does not answer: the commands behind this one would wait as long, so they
        # fail now too (and are not sent again), and the next command reconnects.
        protocol.fail(TimeoutError(f"no reply from redis within {timeout:g} s"))


class RedisConnection:
    """Commands over one pipelined connection, opened on first use in the running loop."""

    def __init__(self, *, host: str, port: int, db: int = 0, username: str | None = None,
                 password: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 connect_timeout: float = 1.0, timeout: float = 1.0) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None

    def to(self, host: str, port: int) -> RedisConnection:
        """A connection to another node with these credentials and timeouts (database 0:
        a Cluster has no other)."""
        return RedisConnection(host=host, port=port, username=self.username,
                               password=self.password, ssl_context=self.ssl_context,
                               connect_timeout=self.connect_timeout, timeout=self.timeout)

    async def execute(self, *args: str | bytes | int, asking: bool = False) -> Any:
        """The command's reply (bytes, int, None or a list of them); raises ReplyError for
        an error reply, TimeoutError or ConnectionError (both OSError) when Redis cannot
        answer. ``asking`` sends `ASKING` just before it (a Cluster slot in migration)."""
        for attempt in (1, 2):
            protocol = await self._connected()
            if asking:
                protocol.send(_ASKING)
            future = protocol.send(_pack(args))
            handle = protocol.loop.call_later(self.timeout, _expire, protocol, future,
                                              self.timeout)
            try:
                reply = await future
            except ConnectionError:
                if attempt == 2:
                    raise
                continue
            finally:
                handle.cancel()
            if isinstance(reply, ReplyError):
                raise reply
            return reply
        raise AssertionError("unreachable")

    async def _connected(self) -> _Protocol:
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        if protocol is not None and not protocol.closed and protocol.loop is loop:
            return protocol
        connecting = self._connecting
        if connecting is None or connecting.get_loop() is not loop:
            connecting = self._connecting = loop.create_task(self._connect(loop))
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        async with asyncio.timeout(self.connect_timeout):
            _, protocol = await loop.create_connection(
                lambda: _Protocol(loop), self.host, self.port, ssl=self.ssl_context)
            setup = []
            if self.password is not None:
                credentials = ((self.username, self.password) if self.username
                               else (self.password,))
                setup.append(protocol.send(_pack(("AUTH", *credentials))))
            if self.db:
                setup.append(protocol.send(_pack(("SELECT", self.db))))
            for reply in await asyncio.gather(*setup):
                if isinstance(reply, ReplyError):
                    protocol.fail(ConnectionError(f"redis refused the connection: {reply}"))
                    raise ConnectionError(f"redis refused the connection: {reply}")
        self._protocol = protocol
        return protocol

    def close(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None and not protocol.closed:
            protocol.transport.close()


class RedisClient:
    """Commands to one Redis, or to a Redis Cluster through any of its nodes.

    The client starts on the URL's node and costs nothing more while that node answers
    everything. A `MOVED` reply means it is one node of a Cluster: the client reads the slot
    map (`CLUSTER SLOTS`), keeps a pipelined connection per master, and from then on sends
    each command to the master of its first key's slot, reading the map again when a reply
    says a slot moved or a master cannot be reached (after a failover). An `ASK` reply (a
    slot being migrated) sends that one command to the node named. The keys of one command
    must share a slot, as Cluster requires: the platform's multi-key calls use one hash tag
    (`cap:{u...}:...`, `budget:{c12}:...`). A Cluster has only database 0.
    """

    def __init__(self, seed: RedisConnection) -> None:
        self.seed = seed
        self._nodes: dict[tuple[str, int], RedisConnection] = {(seed.host, seed.port): seed}
        self._slots: list[RedisConnection] | None = None  # None: not a Cluster (yet)
        self._refreshing: asyncio.Task[None] | None = None

    @property
    def is_cluster(self) -> bool:
        return self._slots is not None

    async def execute(self, *args: str | bytes | int) -> Any:
        connection = self._route(args)
        asking = False
        for _ in range(5):
            try:
                return await connection.execute(*args, asking=asking)
            except ReplyError as error:
                kind, _, rest = str(error).partition(" ")
                if kind not in ("MOVED", "ASK"):
                    raise
                address = rest.rpartition(" ")[2]
                connection = self._node(address, connection)
                asking = kind == "ASK"
                if kind == "MOVED":
                    await self._refresh(connection)
            except OSError:
                if self._slots is None or not await self._refresh_from_any():
                    raise
                connection, asking = self._route(args), False
        raise ConnectionError(f"redis cluster: {args[0]!r} still redirected after 5 tries")

    async def evalsha(self, script: bytes, keys: list[str], args: list[int]) -> Any:
        """Runs a Lua script by its digest, sending the script itself only when its node
        does not know it yet (after a restart, SCRIPT FLUSH or on a new Cluster node)."""
        digest = _digest(script)
        try:
            return await self.execute("EVALSHA", digest, len(keys), *keys, *args)
        except ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script, len(keys), *keys, *args)

    def close(self) -> None:
        for connection in self._nodes.values():
            connection.close()

    def _route(self, args: tuple[str | bytes | int, ...]) -> RedisConnection:
        if self._slots is None:
            return self.seed
        key = _first_key(args)
        return self._slots[key_slot(key)] if key is not None else self.seed

    def _node(self, address: str, asked: RedisConnection) -> RedisConnection:
        host, _, port = address.rpartition(":")
        node = (host or asked.host, int(port))
        if node not in self._nodes:
            self._nodes[node] = self.seed.to(*node)
        return self._nodes[node]

    async def _refresh(self, via: RedisConnection) -> None:
        """Reads the slot map from ``via``; concurrent callers share one read."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.get_running_loop().create_task(self._read_slots(via))
        await asyncio.shield(self._refreshing)

    async def _refresh_from_any(self) -> bool:
        for node in list(self._nodes.values()):
            try:
                await self._refresh(node)
            except (OSError, ReplyError):
                continue
            return True
        return False

    async def _read_slots(self, via: RedisConnection) -> None:
        slots: list[RedisConnection] = [self.seed] * 16384
        for start, end, master, *_ in await via.execute("CLUSTER", "SLOTS"):
            host = master[0].decode() if master[0] else via.host
            node = self._node(f"{host}:{master[1]}", via)
            slots[start:end + 1] = [node] * (end - start + 1)
        self._slots = slots


def key_slot(key: str | bytes) -> int:
    """The Cluster slot of ``key``: CRC16 (XMODEM) of its hash tag, or of the whole key."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1:end]
    return binascii.crc_hqx(data, 0) & 0x3FFF


def _first_key(args: tuple[str | bytes | int, ...]) -> str | bytes | None:
    """The first key of the commands the store sends, or None for one without keys."""
    name = str(args[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return args[3] if int(args[2]) > 0 else None  # type: ignore[return-value]
    if name in ("PING", "CLUSTER", "INFO") or len(args) < 2:
        return None
    return args[1]  # type: ignore[return-value]


def _pack(args: tuple[str | bytes | int, ...]) -> bytes:
    """The command in the Redis protocol (hiredis's stub types only one-word commands)."""
    return cast("bytes", hiredis.pack_command(args))  # type: ignore[arg-type]


_ASKING = b"*1\r\n$6\r\nASKING\r\n"
_DIGESTS: dict[bytes, str] = {}


def _digest(script: bytes) -> str:
    digest = _DIGESTS.get(script)
    if digest is None:
        digest = _DIGESTS[script] = hashlib.sha1(script, usedforsecurity=False).hexdigest()
    return digest


def client_from_url(url: str, *, connect_timeout: float, timeout: float) -> RedisClient:
    """A `RedisClient` starting on the URL's node (`connection_from_url`)."""
    return RedisClient(connection_from_url(url, connect_timeout=connect_timeout,
                                           timeout=timeout))


def connection_from_url(url: str, *, connect_timeout: float,
                        timeout: float) -> RedisConnection:
    """``redis://[[user]:password@]host[:port][/db]``, or ``rediss://`` for TLS (verified
    against the system's CAs, or ``?ssl_ca_certs=<file>``; ``?ssl_cert_reqs=none`` turns
    verification off), as redis-py reads them; ``?db=`` wins over the path."""
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    path = unquote(parts.path).strip("/")
    db = int(query["db"]) if "db" in query else int(path) if path.isdigit() else 0
    context = None
    if parts.scheme == "rediss":
        context = ssl.create_default_context(cafile=query.get("ssl_ca_certs"))
        if query.get("ssl_cert_reqs", "").lower() == "none":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    return RedisConnection(
        host=unquote(parts.hostname or "localhost"), port=parts.port or 6379, db=db,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl_context=context, connect_timeout=connect_timeout, timeout=timeout)
