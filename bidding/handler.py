"""One bid request in, one answer out: shared by the HTTP, gRPC and NATS transports.

Transports find the exchange and check the caller their own way (HTTP headers and address,
gRPC metadata, NATS subject); from the body on, every transport answers the same: 400 for an
unreadable request, 204 or `200 {"id", "nbr"}` for a no-bid (as the exchange asked), 200 with
the OpenRTB response for a bid, and never an error of ours.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bidding import metrics
from bidding.engine import Outcome
from bidding.nbr import NoBid
from bidding.openrtb import InvalidRequest, decode_request, encode_response, normalize
from bidding.openrtb.request import MAX_BODY_BYTES
from bidding.openrtb.response import no_bid_body
from bidding.snapshot import ExchangeEntry

if TYPE_CHECKING:  # the service owns a handler: importing it here would be circular
    from bidding.service import BidderService

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    status: int  # 200 bid or nbr body, 204 no-bid, 400 unreadable request
    body: bytes = b""
    reason: NoBid | None = None


class BidHandler:
    def __init__(self, service: BidderService, *, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.service = service
        self.max_body_bytes = max_body_bytes

    def exchange(self, slug: str) -> ExchangeEntry | None:
        """The exchange a request names, or the default one for an empty slug."""
        index = self.service.engine.index
        if index is None:
            return None
        return index.exchange(slug) if slug else index.default_exchange()

    async def handle(self, body: bytes, *, exchange: ExchangeEntry,
                     received_at: float | None = None) -> Answer:
        """The answer, then its analytics events (`bidding.events`), built once the answer
        is: their cost is not in the latency they record."""
        received_at = received_at or time.perf_counter()
        events = self.service.events
        try:
            request = normalize(decode_request(body, max_bytes=self.max_body_bytes),
                                gdpr_vendor_id=self.service.config.gdpr_vendor_id)
        except InvalidRequest as error:
            events.no_bid(request_id=error.request_id, exchange=exchange,
                          reason=NoBid.INVALID_REQUEST)
            if error.request_id:  # it names itself: a no-bid like any other
                return self.no_bid(exchange, error.request_id, NoBid.INVALID_REQUEST)
            metrics.no_bids(NoBid.INVALID_REQUEST.value).inc()
            metrics.responses(exchange.slug, "invalid").inc()
            return Answer(400, reason=NoBid.INVALID_REQUEST)
        index = self.service.engine.index
        dsp = self.service.dsp
        routing = None
        if dsp is not None and index is not None and index.snapshot.dsp_partners:
            # Partners work while our engine does; the auction below waits for both.
            routing = dsp.start(body, request, partners=index.snapshot.dsp_partners,
                                received_at=received_at, usd_rates=index.snapshot.usd_rates)
        try:
            outcome = await self.service.engine.bid(request, exchange=exchange,
                                                    received_at=received_at)
        except Exception:  # noqa: BLE001 - a bug must cost one no-bid, not an error
            logger.exception("bid on %s failed", request.request_id)
            outcome = Outcome(reason=NoBid.TECHNICAL_ERROR)
        response = outcome.response
        if routing is not None and dsp is not None and index is not None:
            try:
                response = await dsp.finish(routing, request, own=outcome.response,
                                            exchange=exchange,
                                            usd_rates=index.snapshot.usd_rates)
            except Exception:  # noqa: BLE001 - a partner bug must not cost our own bid
                logger.exception("DSP routing of %s failed", request.request_id)
            if outcome.response is not None and response is not outcome.response:
                sent = {bid.id for seat in (response.seatbid if response else ())
                        for bid in seat.bid}
                await self.service.engine.give_back(outcome, [
                    bid.id for seat in outcome.response.seatbid for bid in seat.bid
                    if bid.id not in sent])
        if response is not None and response is not outcome.response:
            # A partner won at least one impression: its events are `dsp_won` (dsp.service);
            # the request's own events still describe our campaigns' decision.
            metrics.responses(exchange.slug, "bid").inc()
            answer = Answer(200, encode_response(response))
        elif outcome.response is None:
            reason = outcome.reason or NoBid.NO_ELIGIBLE_CAMPAIGN
            answer = self.no_bid(exchange, request.request_id, reason)
        else:
            metrics.responses(exchange.slug, "bid").inc()
            answer = Answer(200, encode_response(outcome.response))
        events.answered(request, exchange=exchange, outcome=outcome, index=index,
                        latency_us=int((time.perf_counter() - received_at) * 1_000_000))
        return answer

    @staticmethod
    def no_bid(exchange: ExchangeEntry, request_id: str, reason: NoBid) -> Answer:
        """204, or `200 {"id", "nbr"}` for exchanges that asked for reasons; counted."""
        metrics.no_bids(reason.value).inc()
        metrics.responses(exchange.slug, "no_bid").inc()
        if exchange.no_bid_style == "nbr":
            return Answer(200, no_bid_body(request_id, reason.nbr), reason)
        return Answer(204, b"", reason)
