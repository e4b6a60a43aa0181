"""Embedded mode's one ASGI app: the bid path to the bidder, everything else to Django.

The bidder also owns the server's lifespan here, so it starts (snapshot, model) with the
process and stops with it; on shutdown the web side's `on_shutdown` runs first (it stops the
live view's feed, which shares the in-process bus with the bidder). Websockets (the live
view) always go to the web side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
        else:  # http for Django, and `websocket`
            await self.web(scope, receive, send)

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
