"""DSP routing inside the bidder: what the bid handler calls when routing is on.

The fan-out starts as soon as the request is read and runs while our own engine works; the
auction waits for both. The partners' time is what is left of `tmax` after the time already
spent, the network allowance both ways and a safety margin, never more than a partner's own
timeout; without `tmax`, `default_budget_ms`.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

import msgspec

from analytics.pipeline import EventBuffer
from bidding.openrtb import BidResponse, RequestView
from bidding.pricing import response_currency
from bidding.snapshot import ExchangeEntry
from campaign_express.backends.store import Store
from dsp.partners import PartnerEntry
from dsp.routing import Routing
from dsp.service import DspRouting

logger = logging.getLogger(__name__)


class DspBidder:
    def __init__(self, *, store: Store, secret: bytes, public_url: str, node: str,
                 buffer: EventBuffer | None, network_allowance_ms: int = 20,
                 safety_ms: int = 10, default_budget_ms: int = 200) -> None:
        self.routing = DspRouting(store=store, secret=secret, public_url=public_url,
                                  node=node, buffer=buffer)
        self.network_allowance_ms = network_allowance_ms
        self.safety_ms = safety_ms
        self.default_budget_ms = default_budget_ms

    def budget_ms(self, request: RequestView, received_at: float) -> float:
        spent_ms = (time.perf_counter() - received_at) * 1000
        if request.tmax_ms is None:
            return self.default_budget_ms - spent_ms
        return request.tmax_ms - self.network_allowance_ms - self.safety_ms - spent_ms

    def start(self, body: bytes, request: RequestView, *,
              partners: tuple[PartnerEntry, ...], received_at: float,
              usd_rates: dict[str, Decimal]) -> asyncio.Task[Routing] | None:
        """The fan-out as a task, or None when there is no partner or no time."""
        budget = self.budget_ms(request, received_at)
        if not partners or budget <= 0:
            return None
        raw: dict[str, Any] = msgspec.json.decode(body)
        return asyncio.create_task(self.routing.router.route(
            raw, request, partners=partners, budget_ms=budget, usd_rates=usd_rates))

    async def finish(self, task: asyncio.Task[Routing], request: RequestView, *,
                     own: BidResponse | None, exchange: ExchangeEntry,
                     usd_rates: dict[str, Decimal]) -> BidResponse | None:
        """Our answer with the partners' bids competing in it (``own`` when none won)."""
        routing = await task
        currency = own.cur if own is not None and own.cur else response_currency(
            request.currencies, preferred=exchange.currency, usd_rates=usd_rates)
        if currency is None:
            return own
        return await self.routing.decide(routing, request, own=own, currency=currency,
                                         seat=exchange.seat, usd_rates=usd_rates)

    async def notice(self, kind: str, query: dict[str, str]) -> int:
        return await self.routing.forwarder.handle(kind, query)

    async def close(self) -> None:
        await self.routing.close()
