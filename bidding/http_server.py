"""The bidder process's HTTP/1.1 server: an asyncio protocol over httptools running an ASGI app.

uvicorn cost the bid path 0.19 ms of CPU per request on this project's benchmark machine
against 0.05 ms for a bare httptools protocol (BENCHMARKS.md), a tenth of a bid. This
serves exactly what the bidder's app needs and no more: HTTP/1.1 and 1.0, keep-alive with an
idle timeout, pipelined requests answered in order, bodies with Content-Length or chunked,
`Expect: 100-continue`, each response's head and body written in one system call, and the
caller's address taken from `X-Forwarded-For` when the peer is a trusted proxy (the load
balancer in front: exchanges checked by IP must be seen as themselves). No
upgrades (websockets are the web process's), no lifespan (the caller starts the service),
and a request body is handed to the app whole: one over ``max_body_bytes`` gets 400 (the
OpenRTB answer to an oversized request) and the connection is closed.

Django-free: `python -m bidding` runs it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools

from bidding.gateway import caller_address, in_networks, networks

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
App = Callable[[Message, Callable[[], Awaitable[Message]],
                Callable[[Message], Awaitable[None]]], Awaitable[None]]

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_MAX_PIPELINED = 16  # requests queued on one connection before it stops reading


class _Request:
    """One request's ASGI cycle: `receive` gives the body once, then waits for a disconnect;
    `send` writes the head with the first body part."""

    __slots__ = ("protocol", "scope", "body", "keep_alive", "_head", "_chunked", "_done",
                 "_body_given")

    def __init__(self, protocol: HttpProtocol, scope: Message, body: bytes,
                 keep_alive: bool) -> None:
        self.protocol = protocol
        self.scope = scope
        self.body = body
        self.keep_alive = keep_alive
        self._head: bytes | None = None
        self._chunked = False
        self._done = False
        self._body_given = False

    @property
    def started(self) -> bool:
        """Whether the response's head was given (`http.response.start`)."""
        return self._head is not None

    async def receive(self) -> Message:
        if not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.protocol.closed
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._head = self._start(message)
            return
        if message["type"] != "http.response.body" or self._head is None or self._done:
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.scope["method"] == "HEAD":
            body = b""
        elif self._chunked and body:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        if not more:
            self._done = True
            if self._chunked:
                body += b"0\r\n\r\n"
        self.protocol.write(self._head + body)
        self._head = b""

    def _start(self, message: Message) -> bytes:
        status = message["status"]
        lines = [b"HTTP/1.1 %d %b" % (status, _REASONS.get(status, b""))]
        has_length = False
        for name, value in message.get("headers", ()):
            if name.lower() == b"content-length":
                has_length = True
            lines.append(name + b": " + value)
        if not has_length and status not in (204, 304) and status >= 200:
            self._chunked = True
            lines.append(b"transfer-encoding: chunked")
        if not self.keep_alive:
            lines.append(b"connection: close")
        lines.append(b"\r\n")
        return b"\r\n".join(lines)


class HttpProtocol(asyncio.Protocol):
    """One connection. Requests are parsed as bytes arrive and answered one at a time, in
    order; while one is answered the next wait in a short queue."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = server.loop.create_future()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._pending: deque[_Request] = deque()
        self._active: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._client: tuple[str, int] | None = None
        self._paused = False
        self._via_proxy = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self._client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        self._via_proxy = self._client is not None and in_networks(
            self._client[0], self.server.trusted_proxies)
        self.server.connections.add(self)
        self._wait_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self._cancel_idle()
        if not self.closed.done():
            self.closed.set_result(None)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._cancel_idle()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade, _TooLarge):
            self.write(_BAD_REQUEST)
            self.close()

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size = b"", [], [], 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if (b"expect", b"100-continue") in self._headers and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        url = httptools.parse_url(self._url)
        path = url.path.decode("latin-1")
        request = _Request(self, {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": self.parser.get_http_version(),
            "method": self.parser.get_method().decode("ascii"), "scheme": "http",
            "path": unquote(path) if "%" in path else path, "raw_path": url.path,
            "query_string": url.query or b"", "root_path": "", "headers": self._headers,
            "client": self._caller() if self._via_proxy else self._client,
            "server": self.server.address,
        }, b"".join(self._body), self.parser.should_keep_alive() and not self.server.closing)
        self._pending.append(request)
        if len(self._pending) > _MAX_PIPELINED and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        if self._active is None:
            self._next()

    def _caller(self) -> tuple[str, int] | None:
        forwarded = [value.decode("latin-1") for name, value in self._headers
                     if name == b"x-forwarded-for"]
        if not forwarded or self._client is None:
            return self._client
        return (caller_address(self._client[0], forwarded, self.server.trusted_proxies), 0)

    # answering

    def _next(self) -> None:
        request = self._pending.popleft()
        self._active = self.server.loop.create_task(self._answer(request))

    async def _answer(self, request: _Request) -> None:
        try:
            await self.server.app(request.scope, request.receive, request.send)
        except Exception:  # noqa: BLE001 - one request's failure must not end the server
            logger.exception("%s %s failed", request.scope["method"], request.scope["path"])
            request.keep_alive = False
            if not request.started:
                self.write(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n"
                           b"connection: close\r\n\r\n")
        self._active = None
        if not request.keep_alive or self.transport is None:
            self.close()
            return
        if self._paused and len(self._pending) <= _MAX_PIPELINED:
            self._paused = False
            self.transport.resume_reading()
        if self._pending:
            self._next()
        else:
            self._wait_idle()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    @property
    def is_idle(self) -> bool:
        return self._active is None and not self._pending

    def _wait_idle(self) -> None:
        self._idle = self.server.loop.call_later(self.server.keep_alive_seconds, self.close)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None


class _TooLarge(Exception):
    pass


class Server:
    """`await Server(app, ...).start(host, port)`, then `await server.close()` on shutdown."""

    def __init__(self, app: App, *, max_body_bytes: int, keep_alive_seconds: float = 75.0,
                 trusted_proxies: Sequence[str] = ()) -> None:
        self.app = app
        self.trusted_proxies = networks(trusted_proxies)
        self.max_body_bytes = max_body_bytes
        # Exchanges keep pools of keep-alive connections: a server closing an idle one soon
        # races the exchange's next request on it, which then fails.
        self.keep_alive_seconds = keep_alive_seconds
        self.loop = asyncio.get_running_loop()
        self.connections: set[HttpProtocol] = set()
        self.closing = False
        self.address: tuple[str, int] | None = None
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(lambda: HttpProtocol(self), host, port,
                                                     backlog=2048, reuse_address=True)
        bound = self._server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])

    async def close(self, timeout: float = 10.0) -> None:
        """Stops accepting, closes idle connections, and gives requests in flight up to
        ``timeout`` seconds to be answered (their connections close after them)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + timeout
        while self.connections and self.loop.time() < deadline:
            for connection in list(self.connections):
                if connection.is_idle:
                    connection.close()
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()
