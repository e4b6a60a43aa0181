"""Embedded mode's one ASGI app: the bid path to the bidder, everything else to Django.

The bidder also owns the server's lifespan here, so it starts (snapshot, model) with the
process and stops with it.
"""

from __future__ import annotations

from typing import Any

BIDDER_PREFIXES = ("/v1/bid", "/v1/notice/", "/v1/click", "/v1/conversion")


class PlatformRouter:
    def __init__(self, *, web: Any, bidder: Any) -> None:
        self.web = web
        self.bidder = bidder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan" or (
                scope["type"] == "http" and scope["path"].startswith(BIDDER_PREFIXES)):
            await self.bidder(scope, receive, send)
        else:
            await self.web(scope, receive, send)


def embedded_application() -> PlatformRouter:
    """Django and the bidder in one process, sharing the in-process bus and store."""
    from django.conf import settings

    from bidding.app import BidderApp
    from bidding.service import BidderService
    from campaign_express.asgi import application as web
    from campaign_express.platform import process_bus, process_store

    service = BidderService(config=settings.CONFIG, bus=process_bus(), store=process_store())
    return PlatformRouter(web=web, bidder=BidderApp(service))
