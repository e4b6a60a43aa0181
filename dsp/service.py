"""DSP routing for one bid request, from fan-out to the merged answer and its events.

`DspRouting.run` is what the bid handler calls when routing is on and the snapshot has
partners: it routes the request (`dsp.routing`), runs the auction between our own answer and
the partners' bids (`dsp.auction`), puts each winning partner bid in the answer with our
signed notice URLs (`dsp.forwarding`), tells losing partners at once, and records a
`dsp_sent`, `dsp_timeout`, `dsp_won` or `dsp_lost` event per partner and bid.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Any

from analytics.events import Event, EventType
from analytics.pipeline import EventBuffer
from bidding.openrtb import Bid, BidResponse, RequestView, SeatBid
from bidding.pricing import UnknownCurrency, convert
from campaign_express.backends.store import Store, StoreUnavailable
from dsp.auction import ImpResult, loss_code, run_auction
from dsp.forwarding import Forwarder, WonBid, substitute
from dsp.limits import BreakerSettings, PartnerLimits
from dsp.partners import PartnerEntry
from dsp.routing import Router, Routing
from dsp.validation import PartnerBid

logger = logging.getLogger(__name__)

MICROS = Decimal(1_000_000)


class DspRouting:
    def __init__(self, *, store: Store, secret: bytes, public_url: str, node: str,
                 buffer: EventBuffer | None = None,
                 breaker: BreakerSettings | None = None) -> None:
        self.limits = PartnerLimits(store, breaker=breaker)
        self.router = Router(limits=self.limits)
        self.forwarder = Forwarder(store=store, limits=self.limits, secret=secret,
                                   client=self.router.client)
        self.public_url = public_url.rstrip("/")
        self.node = node
        self.buffer = buffer

    async def close(self) -> None:
        await self.forwarder.drain()
        await self.router.close()

    async def run(self, raw: dict[str, Any], request: RequestView, *,
                  own: BidResponse | None, partners: tuple[PartnerEntry, ...],
                  budget_ms: float, currency: str, seat: str,
                  usd_rates: dict[str, Decimal]) -> BidResponse | None:
        """Our answer with the partners competing in it; ``own`` is our campaigns' answer
        (None for a no-bid) and ``currency`` the answer's currency."""
        routing = await self.router.route(raw, request, partners=partners, budget_ms=budget_ms,
                                          usd_rates=usd_rates)
        return await self.decide(routing, request, own=own, currency=currency, seat=seat,
                                 usd_rates=usd_rates)

    async def decide(self, routing: Routing, request: RequestView, *, own: BidResponse | None,
                     currency: str, seat: str,
                     usd_rates: dict[str, Decimal]) -> BidResponse | None:
        """The auction over a finished fan-out (the bidder routes while its own engine
        works, then decides)."""
        self._call_events(request, routing)
        partner_bids = routing.bids
        if not partner_bids:
            return own
        own_bids = [bid for seat_bid in (own.seatbid if own else ()) for bid in seat_bid.bid]
        floors = {}
        for imp in request.imps:
            try:
                floors[imp.imp_id] = convert(imp.floor, source=imp.floor_currency,
                                             target=currency, usd_rates=usd_rates)
            except UnknownCurrency:
                continue
        results = run_auction(own_bids=own_bids, partner_bids=partner_bids, currency=currency,
                              floors=floors, auction_type=request.auction_type,
                              usd_rates=usd_rates)
        bids: list[Bid] = []
        winners: set[int] = set()
        for result in results:
            winner = result.winner
            for loser in result.losers:
                if loser.partner_bid is not None:
                    self._lost(request, loser.partner_bid, loss_code(result, loser))
            if winner.partner_bid is None:
                bids.append(winner.bid)
                continue
            try:
                bids.append(await self._partner_win(request, result, winner.partner_bid,
                                                    currency))
            except StoreUnavailable:
                continue  # without its record no notice could reach the partner
            winners.add(id(winner.partner_bid))
        decided = {id(loser.partner_bid) for result in results for loser in result.losers}
        for partner_bid in partner_bids:
            if id(partner_bid) not in winners and id(partner_bid) not in decided:
                lost_to_own = any(result.imp_id == partner_bid.bid.impid for result in results)
                self._lost(request, partner_bid, 102 if lost_to_own else 100)
        if not bids:
            return own
        return BidResponse(id=request.request_id, bidid=(own.bidid if own else None)
                           or uuid.uuid4().hex, cur=currency,
                           seatbid=[SeatBid(seat=seat, bid=bids)])

    async def _partner_win(self, request: RequestView, result: ImpResult,
                           partner_bid: PartnerBid, currency: str) -> Bid:
        partner, bid = partner_bid.partner, partner_bid.bid
        bid_id = uuid.uuid4().hex
        await self.forwarder.remember(bid_id, WonBid(
            partner_id=partner.id, seat=partner.seat, auction=request.request_id,
            imp=bid.impid, partner_bid_id=bid.id, partner_bidid=partner_bid.bid_response_id,
            ad_id=bid.adid or "", price=bid.price, margin=result.winner.margin,
            currency=partner.currency, nurl=bid.nurl or "", burl=bid.burl or "",
            lurl=bid.lurl or ""))

        def url(kind: str) -> str:
            return f"{self.public_url}/v1/notice/dsp-{kind}?" + self.forwarder.notice_query(
                kind, auction=request.request_id, imp=bid.impid, bid_id=bid_id,
                partner_id=partner.id, currency=currency)

        self._emit(EventType.DSP_WON, request, partner, bid, price=result.price,
                   currency=currency, attributes={"margin": str(result.winner.margin),
                                                  "partner_price": str(bid.price)})
        # The markup is the partner's; a partner that serves it from its win notice gets
        # the notice forwarded and the exchange our own nurl.
        return Bid(id=bid_id, impid=bid.impid, price=result.price, adm=bid.adm,
                   nurl=url("win"), burl=url("billing"), lurl=url("loss"), adid=bid.adid,
                   adomain=bid.adomain, bundle=bid.bundle, iurl=bid.iurl, cid=bid.cid,
                   crid=bid.crid, cattax=bid.cattax, cat=bid.cat, attr=bid.attr,
                   dealid=bid.dealid, w=bid.w, h=bid.h, mtype=bid.mtype, dur=bid.dur,
                   ext={"dsp": {"seat": partner.seat, "margin": str(result.winner.margin)}})

    def _lost(self, request: RequestView, partner_bid: PartnerBid, code: int) -> None:
        partner, bid = partner_bid.partner, partner_bid.bid
        self._emit(EventType.DSP_LOST, request, partner, bid, price=bid.price,
                   currency=partner.currency, reason=str(code))
        if bid.lurl:
            self.forwarder.send(substitute(
                bid.lurl, auction=request.request_id, imp=bid.impid,
                response_bid_id=partner_bid.bid_response_id, seat=partner.seat,
                ad_id=bid.adid or "", price="", currency=partner.currency, loss=str(code)),
                seat=partner.seat, kind="loss")

    def _call_events(self, request: RequestView, routing: Routing) -> None:
        for call in routing.calls:
            if call.outcome in ("bid", "no_bid", "error", "timeout"):
                event_type = EventType.DSP_TIMEOUT if call.outcome == "timeout" else \
                    EventType.DSP_SENT
                attributes = {"bids": str(len(call.bids))}
                if call.dropped:
                    attributes["dropped"] = ",".join(sorted(call.dropped))
                self._put(Event(event_type=event_type, node=self.node,
                                request_id=request.request_id, partner=call.partner.seat,
                                latency_us=call.latency_ms * 1000, reason=call.outcome,
                                attributes=attributes))

    def _emit(self, event_type: EventType, request: RequestView, partner: PartnerEntry,
              bid: Bid, *, price: Decimal, currency: str, reason: str = "",
              attributes: dict[str, str] | None = None) -> None:
        self._put(Event(event_type=event_type, node=self.node, request_id=request.request_id,
                        impression_id=bid.impid, offer_id=bid.id, creative_id=bid.crid or "",
                        partner=partner.seat, price_micros=int(price * MICROS),
                        currency=currency, reason=reason, attributes=attributes or {}))

    def _put(self, event: Event) -> None:
        if self.buffer is not None:
            self.buffer.emit(event)
