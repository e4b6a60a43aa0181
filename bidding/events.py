"""The bidder's analytics events, built from what the bid path and the notices already hold.

Every answered request becomes one `bid_request` event (its latency, the no-bid reason if
any, whether user-level data could be used, the model version and the engine's refusal
counts), then one `bid` event per bid in the response or one `no_bid` event; a request
answered without bidding (unreadable, or shed by a full agent queue) is a `no_bid` alone.
Counted notices become `win`, `billing`, `loss`, `impression`, `click`, `vast_tracking`
(the VAST event in the `event` attribute: start, quartiles, complete) and `conversion` events
carrying the ids of the bid they name, so reports join them to the bid by `offer_id` (the bid
id).

Prices are integer micros, never floats: a `bid` holds the CPM sent on the wire in the
response currency, a `win` the clearing CPM in the bid's currency, a `billing` the spend
counted on the campaign's budget (one impression, in the campaign's currency), a
`conversion` the value the advertiser reported. `user_id` is set only when the request had
consent: on bid events it is the platform's user id, on notices the hashed key the signed
URL carries (`bidding.budget.user_key`), which is only set with consent.

Building an event is plain field assignment (about 5 µs, `benchmarks/bid_events.py`) and
`EventBuffer.emit` never blocks nor raises: events cost the bid path no I/O. Changing a
field's meaning here changes what every report and dashboard computes from it.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal

from analytics.events import Event, EventType
from analytics.pipeline import EventBuffer
from bidding.engine import MTYPE, Outcome
from bidding.index import CampaignIndex
from bidding.nbr import NoBid
from bidding.openrtb import BidResponse, RequestView
from bidding.snapshot import ExchangeEntry

logger = logging.getLogger(__name__)

MEDIA = {number: media for media, number in MTYPE.items()}
NOTICE_TYPES = {"win": EventType.WIN, "billing": EventType.BILLING, "loss": EventType.LOSS,
                "impression": EventType.IMPRESSION, "click": EventType.CLICK,
                "tracking": EventType.VAST_TRACKING}


def wire_micros(price: Decimal) -> int:
    """Micros of the price as the response carries it: `wire_price` keeps 4 decimals,
    rounded down, so this is the same amount without its quantize (a tenth of the cost)."""
    return int(price.scaleb(4)) * 100


def _advertiser(index: CampaignIndex | None, campaign_id: str) -> str:
    """The campaign's advertiser id from the served snapshot, or "" when it is not served."""
    if index is None or not campaign_id.isdigit():
        return ""
    campaign = index.campaign(int(campaign_id))
    return str(campaign.advertiser_id) if campaign is not None else ""


def request_events(request: RequestView, *, exchange: ExchangeEntry, outcome: Outcome,
                   index: CampaignIndex | None, node: str, latency_us: int) -> list[Event]:
    """`bid_request`, then a `bid` per bid in the response or one `no_bid`."""
    response = outcome.response
    reason = "" if response is not None else (outcome.reason or NoBid.NO_ELIGIBLE_CAMPAIGN).value
    user_id = request.user_id if request.has_user_consent else ""
    attributes = {"consent": "1" if request.has_user_consent else "0",
                  "scored": str(outcome.scored)}
    if outcome.model_version:
        attributes["model_version"] = outcome.model_version
    if request.is_test:
        attributes["test"] = "1"
    for refusal, count in outcome.refusals.items():
        attributes[f"refused.{refusal}"] = str(count)
    events = [Event(event_type=EventType.BID_REQUEST, node=node, request_id=request.request_id,
                    exchange=exchange.slug, user_id=user_id, latency_us=latency_us,
                    reason=reason, attributes=attributes)]
    if response is None:
        events.append(Event(event_type=EventType.NO_BID, node=node,
                            request_id=request.request_id, exchange=exchange.slug,
                            reason=reason))
        return events
    events.extend(bid_events(response, request=request, exchange=exchange, index=index,
                             node=node, user_id=user_id))
    return events


def bid_events(response: BidResponse, *, request: RequestView, exchange: ExchangeEntry,
               index: CampaignIndex | None, node: str, user_id: str) -> list[Event]:
    currency = response.cur or "USD"
    events = []
    for seat in response.seatbid:
        for bid in seat.bid:
            attributes = {"media": MEDIA.get(bid.mtype or 0, "")}
            if bid.dealid:
                attributes["dealid"] = bid.dealid
            if request.is_test:
                attributes["test"] = "1"
            campaign_id = bid.cid or ""
            events.append(Event(
                event_type=EventType.BID, node=node, request_id=request.request_id,
                impression_id=bid.impid, offer_id=bid.id, campaign_id=campaign_id,
                creative_id=bid.crid or "", advertiser_id=_advertiser(index, campaign_id),
                user_id=user_id, exchange=exchange.slug,
                price_micros=wire_micros(bid.price), currency=currency,
                attributes=attributes))
    return events


def no_bid_event(*, request_id: str, exchange: ExchangeEntry, reason: NoBid,
                 node: str) -> Event:
    """A no-bid given without an outcome: an unreadable request (no id) or shed load."""
    return Event(event_type=EventType.NO_BID, node=node, request_id=request_id,
                 exchange=exchange.slug, reason=reason.value)


def notice_event(kind: str, query: Mapping[str, str], *, index: CampaignIndex | None,
                 node: str, price_micros: int = 0, currency: str = "") -> Event | None:
    """The event of a counted notice (None for a kind that has none). `query` holds the
    signed fields (`bidding.engine.NOTICE_FIELDS`), and a VAST tracking notice its `event`."""
    event_type = NOTICE_TYPES.get(kind)
    if event_type is None:
        return None
    attributes = {"test": "1"} if query.get("test") == "1" else {}
    if kind == "tracking":
        attributes["event"] = query["event"]
    return Event(event_type=event_type, node=node, request_id=query["auction"],
                 impression_id=query["imp"], offer_id=query["bid"],
                 campaign_id=query["campaign"], creative_id=query["creative"],
                 advertiser_id=_advertiser(index, query["campaign"]),
                 user_id=query.get("user", ""), exchange=query["exchange"],
                 price_micros=price_micros, currency=currency,
                 reason=query.get("loss", "") if kind == "loss" else "",
                 attributes=attributes)


def conversion_event(fields: Mapping[str, str], *, index: CampaignIndex | None, node: str,
                     value_micros: int) -> Event:
    """A counted conversion: the click token names the campaign, creative and bid; the value
    is in the campaign's currency (what the advertiser reports against)."""
    campaign_id = fields["campaign"]
    campaign = None
    if index is not None and campaign_id.isdigit():
        campaign = index.campaign(int(campaign_id))
    return Event(event_type=EventType.CONVERSION, node=node, offer_id=fields["bid"],
                 campaign_id=campaign_id, creative_id=fields["creative"],
                 advertiser_id=str(campaign.advertiser_id) if campaign is not None else "",
                 price_micros=value_micros,
                 currency=campaign.currency if campaign is not None and value_micros else "")


class BidEvents:
    """Builds events and puts them in the process's buffer. Never blocks and never raises:
    a bug in building an event is logged and costs the event, not the answer or the notice."""

    def __init__(self, *, buffer: EventBuffer, node: str) -> None:
        self.buffer = buffer
        self.node = node

    def answered(self, request: RequestView, *, exchange: ExchangeEntry, outcome: Outcome,
                 index: CampaignIndex | None, latency_us: int) -> None:
        try:
            events = request_events(request, exchange=exchange, outcome=outcome, index=index,
                                    node=self.node, latency_us=latency_us)
        except Exception:  # noqa: BLE001 - analytics must never fail a bid
            logger.exception("no analytics events for request %s", request.request_id)
            return
        for event in events:
            self.buffer.emit(event)

    def no_bid(self, *, request_id: str, exchange: ExchangeEntry, reason: NoBid) -> None:
        self.buffer.emit(no_bid_event(request_id=request_id, exchange=exchange, reason=reason,
                                      node=self.node))

    def notice(self, kind: str, query: Mapping[str, str], *, index: CampaignIndex | None,
               price_micros: int = 0, currency: str = "") -> None:
        try:
            event = notice_event(kind, query, index=index, node=self.node,
                                 price_micros=price_micros, currency=currency)
        except Exception:  # noqa: BLE001 - analytics must never fail a notice
            logger.exception("no analytics event for a %s notice", kind)
            return
        if event is not None:
            self.buffer.emit(event)

    def conversion(self, fields: Mapping[str, str], *, index: CampaignIndex | None,
                   value_micros: int) -> None:
        try:
            event = conversion_event(fields, index=index, node=self.node,
                                     value_micros=value_micros)
        except Exception:  # noqa: BLE001 - analytics must never fail a postback
            logger.exception("no analytics event for a conversion")
            return
        self.buffer.emit(event)
