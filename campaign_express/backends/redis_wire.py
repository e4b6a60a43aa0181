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

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
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

    async def execute(self, *args: str | bytes | int) -> Any:
        """The command's reply (bytes, int, None or a list of them); raises ReplyError for
        an error reply, TimeoutError or ConnectionError (both OSError) when Redis cannot
        answer."""
        for attempt in (1, 2):
            protocol = await self._connected()
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

    async def evalsha(self, script: bytes, keys: list[str], args: list[int]) -> Any:
        """Runs a Lua script by its digest, sending the script itself only when Redis does
        not know it yet (after a restart or SCRIPT FLUSH)."""
        digest = _digest(script)
        try:
            return await self.execute("EVALSHA", digest, len(keys), *keys, *args)
        except ReplyError as error:
            if not str(error).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script, len(keys), *keys, *args)

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


def _pack(args: tuple[str | bytes | int, ...]) -> bytes:
    """The command in the Redis protocol (hiredis's stub types only one-word commands)."""
    return cast("bytes", hiredis.pack_command(args))  # type: ignore[arg-type]


_DIGESTS: dict[bytes, str] = {}


def _digest(script: bytes) -> str:
    digest = _DIGESTS.get(script)
    if digest is None:
        digest = _DIGESTS[script] = hashlib.sha1(script, usedforsecurity=False).hexdigest()
    return digest


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
