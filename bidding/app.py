"""The bidder's lean ASGI app: `POST /v1/bid[/{exchange}]`, notices (`/v1/notice/{kind}`),
clicks (`/v1/click`), `/health`, `/live`, `/ready`.

No framework and no Django on this path: the request is read, decoded, normalized and bid on
in a handful of function calls. Errors never become a 500: an unreadable request is a 400
without a body (OpenRTB §2.1), anything we do not bid on is a 204 (or `200 {"id", "nbr"}`
for exchanges that asked for reasons), and an exception of ours is logged and answered as a
no-bid for technical error.

Every request sets one log context (`campaign_express.logs.REQUEST`); its id is worked out
only if a line is logged. With tracing on (`campaign_express.telemetry`), bids, notices and
clicks are server spans; off, that costs one module attribute check per request.

In production it runs as its own process (`python -m bidding`, served by
`bidding.http_server`); in embedded mode (`manage.py run`) the platform's ASGI router sends
`/v1/bid*`, notices and clicks here and everything else to Django.
"""

from __future__ import annotations

import gzip
import json
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from bidding import metrics
from bidding.gateway import allows, bearer_token
from bidding.handler import Answer, BidHandler
from bidding.nbr import NoBid
from bidding.openrtb.request import MAX_BODY_BYTES
from bidding.service import BidderService
from bidding.snapshot import ExchangeEntry
from campaign_express import telemetry
from campaign_express.logs import REQUEST, RequestContext

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

OPENRTB_VERSION = (b"x-openrtb-version", b"2.6")
JSON = (b"content-type", b"application/json")
GZIP_MIN_BYTES = 1024


class BodyTooLarge(Exception):
    pass


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = decompressor.decompress(body, limit + 1)
    if len(data) > limit:
        raise BodyTooLarge
    return data


async def _respond(send: Send, status: int, body: bytes = b"",
                   headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _trace_carrier(scope: Scope) -> dict[str, str]:
    return {key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope.get("headers", ())
            if key.lower() in (b"traceparent", b"tracestate")}


class HttpRequestContext(RequestContext):
    """A request's log context. Its id, the OpenRTB request's (else the caller's
    `X-Request-ID`), is read only when a line is logged: a request that logs nothing pays
    for one object."""

    __slots__ = ("scope", "body", "answer")

    def __init__(self, scope: Scope, span: Any = None) -> None:
        self._request_id = ""
        self.span = span
        self.scope = scope
        self.body = b""
        self.answer: Answer | None = None

    @property
    def request_id(self) -> str:
        if not self._request_id:
            self._request_id = (telemetry.openrtb_request_id(self.body)
                                or _header(self.scope, b"x-request-id"))
        return self._request_id


def caller_allowed(exchange: ExchangeEntry, scope: Scope) -> bool:
    """The exchange's check (`gateway.allows`) on the request's token and address."""
    return allows(exchange, token=bearer_token(_header(scope, b"authorization")),
                  address=(scope.get("client") or ("", 0))[0])


class BidderApp:
    def __init__(self, service: BidderService, *,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.service = service
        self.handler = BidHandler(service, max_body_bytes=max_body_bytes)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path.startswith("/v1/bid") and method == "POST":
            if telemetry.tracer is None:
                await self.bid(scope, receive, send, HttpRequestContext(scope))
            else:
                await self._traced_bid(scope, receive, send)
        elif (path.startswith("/v1/notice/") or path in ("/v1/click", "/v1/conversion")) and (
                method in ("GET", "POST")):
            if telemetry.tracer is None:
                await self.notice(scope, receive, send, HttpRequestContext(scope))
            else:
                await self._traced_notice(scope, receive, send)
        elif path in ("/health", "/live") and method in ("GET", "HEAD"):
            await _respond(send, 200, b'{"status":"ok"}', (JSON,))
        elif path == "/ready" and method in ("GET", "HEAD"):
            ready = self.service.is_ready
            body = json.dumps({"status": "ready" if ready else "not ready",
                               **self.service.state()}).encode()
            await _respond(send, 200 if ready else 503, body, (JSON,))
        else:
            await _respond(send, 404)

    async def _traced_bid(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`bid` in a `POST /v1/bid` span: exchange, OpenRTB id, status, no-bid reason, bids."""
        slug = scope["path"].removeprefix("/v1/bid").strip("/")
        exchange = self.handler.exchange(slug)
        statuses: list[int] = []

        async def send_and_keep_status(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            await send(message)

        with telemetry.server_span("POST /v1/bid", carrier=_trace_carrier(scope), attributes={
                "http.request.method": "POST", "url.path": scope["path"],
                "openrtb.exchange": exchange.slug if exchange is not None else slug}) as span:
            request = HttpRequestContext(scope, span)
            await self.bid(scope, receive, send_and_keep_status, request)
            answer = request.answer
            telemetry.bid_attributes(span, status=statuses[0] if statuses else 0,
                                     body=answer.body if answer is not None else b"",
                                     request_body=request.body,
                                     reason=answer.reason if answer is not None else None)

    async def _traced_notice(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        route = path if path in ("/v1/click", "/v1/conversion") else "/v1/notice/{kind}"
        with telemetry.server_span(f"{scope['method']} {route}", carrier=_trace_carrier(scope),
                                   attributes={"http.request.method": scope["method"],
                                               "url.path": path}) as span:
            async def send_and_record_status(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    telemetry.http_status(span, message["status"])
                await send(message)

            await self.notice(scope, receive, send_and_record_status,
                              HttpRequestContext(scope, span))

    async def notice(self, scope: Scope, receive: Receive, send: Send,
                     request: HttpRequestContext) -> None:
        """GET or POST; the fields are in the query string either way (OpenRTB §4.3)."""
        token = REQUEST.set(request)
        try:
            await self._notice(scope, receive, send)
        finally:
            REQUEST.reset(token)

    async def _notice(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "POST":
            try:
                await _read_body(receive, 64 * 1024)
            except BodyTooLarge:
                await _respond(send, 400)
                return
        path = scope["path"]
        kind = "click" if path == "/v1/click" else path.removeprefix("/v1/notice/")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                               keep_blank_values=True))
        if kind.startswith("dsp-"):
            dsp = self.service.dsp
            status = await dsp.notice(kind.removeprefix("dsp-"), query) if dsp else 404
            await _respond(send, status)
            return
        if path == "/v1/conversion":
            answer = await self.service.notices.conversion(query,
                                                           index=self.service.engine.index)
        else:
            answer = await self.service.notices.handle(kind, query,
                                                       index=self.service.engine.index)
        headers = ((b"location", answer.location.encode()),) if answer.location else ()
        await _respond(send, answer.status, b"", headers)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.service.start()
                except Exception as error:  # noqa: BLE001 - reported to the server, which exits
                    logger.exception("bidder failed to start")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def bid(self, scope: Scope, receive: Receive, send: Send,
                  request: HttpRequestContext) -> None:
        received_at = time.perf_counter()
        token = REQUEST.set(request)
        exchange = self.handler.exchange(scope["path"].removeprefix("/v1/bid").strip("/"))
        label = exchange.slug if exchange is not None else "unknown"
        metrics.requests(label).inc()
        try:
            if exchange is None:
                await self._refuse(send, label, 404 if self.service.is_ready else 503)
                return
            if not caller_allowed(exchange, scope):
                await self._refuse(send, label, 401 if exchange.auth == "token" else 403)
                return
            try:
                body = await _read_body(receive, self.max_body_bytes)
                if _header(scope, b"content-encoding").lower() == "gzip":
                    body = _gunzip(body, self.max_body_bytes)
                request.body = body
            except (BodyTooLarge, zlib.error, OSError):
                metrics.no_bids(NoBid.INVALID_REQUEST.value).inc()
                metrics.responses(label, "invalid").inc()
                self.service.events.no_bid(request_id="", exchange=exchange,
                                           reason=NoBid.INVALID_REQUEST)
                await _respond(send, 400)
                return
            answer = await self.service.agents.submit(body, exchange=exchange,
                                                     received_at=received_at)
            request.answer = answer
            headers = [OPENRTB_VERSION]
            payload = answer.body
            if answer.status == 200:
                headers.append(JSON)
                if len(payload) >= GZIP_MIN_BYTES and "gzip" in _header(
                        scope, b"accept-encoding").lower():
                    payload = gzip.compress(payload, compresslevel=5)
                    headers.append((b"content-encoding", b"gzip"))
            await _respond(send, answer.status, payload,
                           tuple(headers) if answer.status != 400 else ())
        finally:
            metrics.LATENCY_US.observe((time.perf_counter() - received_at) * 1_000_000)
            REQUEST.reset(token)

    async def _refuse(self, send: Send, label: str, status: int) -> None:
        metrics.responses(label, "refused").inc()
        await _respond(send, status)
