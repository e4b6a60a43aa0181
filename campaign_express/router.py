"""Embedded mode's one ASGI app: the bid path to the bidder, everything else to Django.

The bidder also owns the server's lifespan here, so it starts (snapshot, model) with the
process and stops with it; on shutdown the web side's `on_shutdown` runs first (it stops the
live view's feed, which shares the in-process bus with the bidder). Websockets (the live
view) always go to the web side.

`/ready` answers for both halves, since this process does both jobs: Django's body (the
database and every backend's state) with the bidder's state added as the bidder process gives
it (`snapshot_version`, `campaigns`, `model`), and 200 only while the database answers and
the bidder holds a snapshot and a model. Answering for Django alone would say ready while
every bid gets 503.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

BIDDER_PREFIXES = ("/v1/bid", "/v1/notice/", "/v1/click", "/v1/conversion")


class PlatformRouter:
    def __init__(self, *, web: Any, bidder: Any,
                 on_shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
        self.web = web
        self.bidder = bidder
        self.on_shutdown = on_shutdown

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self.bidder(scope, self._receive_lifespan(receive), send)
        elif scope["type"] == "http" and scope["path"].startswith(BIDDER_PREFIXES):
            await self.bidder(scope, receive, send)
        elif scope["type"] == "http" and scope["path"] == "/ready":
            await self._ready(scope, receive, send)
        else:  # http for Django, and `websocket`
            await self.web(scope, receive, send)

    async def _ready(self, scope: Any, receive: Any, send: Any) -> None:
        messages: list[MutableMapping[str, Any]] = []

        async def keep(message: MutableMapping[str, Any]) -> None:
            messages.append(message)

        await self.web(scope, receive, keep)
        start = next(message for message in messages
                     if message["type"] == "http.response.start")
        web_body = b"".join(message.get("body", b"") for message in messages
                            if message["type"] == "http.response.body")
        try:
            state = json.loads(web_body)
        except ValueError:
            state = {}
        service = self.bidder.service
        is_ready = start["status"] == 200 and service.is_ready
        state.update(status="ready" if is_ready else "not ready", **service.state())
        body = json.dumps(state).encode()
        headers = [(name, value) for name, value in start.get("headers", ())
                   if name.lower() not in (b"content-length", b"content-type")]
        await send({"type": "http.response.start", "status": 200 if is_ready else 503,
                    "headers": [*headers, (b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _receive_lifespan(self, receive: Any) -> Callable[[], Awaitable[Any]]:
        async def receive_message() -> Any:
            message = await receive()
            if message["type"] == "lifespan.shutdown" and self.on_shutdown is not None:
                await self.on_shutdown()
            return message

        return receive_message


def embedded_application(*, grpc_port: int | None = None) -> PlatformRouter:
    """Django and the bidder in one process, sharing the in-process bus and store; the
    bidder's gRPC server on `grpc_port` when given (0: any free port)."""
    from django.conf import settings

    from analytics.consumers import live_feed_stop
    from bidding.app import BidderApp
    from bidding.service import BidderService
    from campaign_express.asgi import application as web
    from campaign_express.platform import process_bus, process_store

    service = BidderService(config=settings.CONFIG, bus=process_bus(), store=process_store(),
                            grpc_port=grpc_port)
    return PlatformRouter(web=web, bidder=BidderApp(service), on_shutdown=live_feed_stop)
