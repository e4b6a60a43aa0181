"""A partner's answer, bid by bid: what we may put in front of the exchange.

Each bid that breaks a rule is dropped with its reason and counted; the rest of the answer
still competes. A bid the exchange would refuse (blocked advertiser, category) or could not
serve (no markup) would cost our seat's standing with it, not the partner's.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bidding.openrtb import Bid, BidResponse, RequestView
from dsp.partners import PartnerEntry

REASONS = ("unknown_impid", "below_floor", "missing_markup", "missing_crid",
           "blocked_adomain", "blocked_category", "wrong_currency", "bad_price")


@dataclass(frozen=True)
class PartnerBid:
    partner: PartnerEntry
    bid: Bid
    bid_response_id: str  # the partner's `bidid`, for its macros


def bid_refusal(bid: Bid, *, request: RequestView, floors: dict[str, Decimal],
                currency: str, expected_currency: str) -> str | None:
    """Why ``bid`` cannot compete (a REASONS member), or None."""
    if currency != expected_currency:
        return "wrong_currency"
    if bid.impid not in floors:
        return "unknown_impid"
    if not bid.price.is_finite() or bid.price <= 0:
        return "bad_price"
    if bid.price < floors[bid.impid]:
        return "below_floor"
    if not bid.adm:
        # Markup served from the partner's win notice cannot pass through our own nurl.
        return "missing_markup"
    if not bid.crid:
        return "missing_crid"
    if request.blocked_advertiser_domains and any(
            domain.lower() in request.blocked_advertiser_domains for domain in bid.adomain or ()):
        return "blocked_adomain"
    if request.blocked_categories and any(
            category in request.blocked_categories for category in bid.cat or ()):
        return "blocked_category"
    return None


def valid_bids(response: BidResponse, *, partner: PartnerEntry, request: RequestView,
               floors: dict[str, Decimal]) -> tuple[list[PartnerBid], list[str]]:
    """The bids that may compete, and the reasons of those dropped. ``floors`` is by imp id,
    in the partner's currency, raised by its margin (what it was sent)."""
    currency = (response.cur or "USD").upper()
    kept: list[PartnerBid] = []
    dropped: list[str] = []
    for seat in response.seatbid:
        for bid in seat.bid:
            reason = bid_refusal(bid, request=request, floors=floors, currency=currency,
                                 expected_currency=partner.currency)
            if reason is None:
                kept.append(PartnerBid(partner, bid, response.bidid or ""))
            else:
                dropped.append(reason)
    return kept, dropped
