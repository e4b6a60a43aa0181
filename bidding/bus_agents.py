"""Bid requests over the bus: core NATS request/reply on `campaign-bids.bid-requests`.

Each bidder subscribes once in queue group `bid-agents`, so NATS hands every request to one
bidder of the group. The message data is the OpenRTB request JSON; header `exchange` names the
exchange (absent or empty: the default one) and `authorization` carries `Bearer <token>` for
exchanges that need one. The reply's data is the answer's body and its header `status` the
HTTP status the same request gets over HTTP (200, 204, 400, 401, 403, 404, 503). A bus caller
has no address, so an exchange limited to an IP list answers 403 here.

Requests are not answered one at a time: each one goes to the agent pool as a task of its own,
so the bus's one-delivery-at-a-time subscription never caps a node at one bid, and a full
queue sheds here as it does for HTTP. No JetStream stream may capture the subject (DESIGN.md):
the requester would read the stream's ack as the answer.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import logging

from bidding.gateway import Gateway, bearer_token
from campaign_express.backends.bus import Bus, BusUnavailable, Message, Subscription

logger = logging.getLogger(__name__)

SUBJECT = "campaign-bids.bid-requests"
QUEUE = "bid-agents"


class BusAgents:
    def __init__(self, *, bus: Bus, gateway: Gateway) -> None:
        self.bus = bus
        self.gateway = gateway
        self._subscription: Subscription | None = None
        self._answering: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._subscription is None:
            self._subscription = await self.bus.subscribe(SUBJECT, self._on_request, queue=QUEUE)

    async def stop(self) -> None:
        """Leave the queue group, then finish answering what was already taken."""
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except BusUnavailable as error:
                logger.warning("could not leave %s: %s", QUEUE, error)
        if self._answering:
            await asyncio.gather(*self._answering, return_exceptions=True)

    async def _on_request(self, message: Message) -> None:
        if not message.reply:
            logger.warning("a bid request on %s has no reply subject; dropped", SUBJECT)
            return
        task = asyncio.create_task(self._answer(message))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(self, message: Message) -> None:
        headers = {name.lower(): value for name, value in message.headers.items()}
        answer = await self.gateway.answer(
            message.data, exchange_slug=headers.get("exchange", "").strip(),
            token=bearer_token(headers.get("authorization", "")), address="")
        try:
            await message.respond(answer.body, headers={"status": str(answer.status)})
        except BusUnavailable as error:
            logger.warning("could not answer a bid request: %s", error)
