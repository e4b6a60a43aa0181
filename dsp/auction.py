"""One auction per impression across our own best bid and the partners' bids.

A partner's bid competes at its net price: what it bid less our margin, converted into the
response currency. A deal bid keeps its price (the deal's terms are between the partner and
the seller; taking a margin off would bid below the agreed price), and its margin shows as 0.
First price by default: the winner bids what it offered. When the request says `at=2`, the
winner bids the runner-up's price (or the floor) plus one cent, never more than it offered,
so a partner is not made to pay more than the auction needed.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from bidding.openrtb import Bid
from bidding.pricing import UnknownCurrency, convert
from dsp.validation import PartnerBid

INCREMENT = Decimal("0.01")
LOSS_LOST_TO_HIGHER_BID = 102
LOSS_BELOW_FLOOR = 100  # "bid was below auction floor" is 100 in the loss reason codes


@dataclass(frozen=True)
class Entrant:
    bid: Bid
    net: Decimal  # what it competes at, in the response currency
    margin: Decimal  # the share we keep (0 for our own bids and deal bids)
    partner_bid: PartnerBid | None = None  # None: our own campaign's bid


@dataclass(frozen=True)
class ImpResult:
    imp_id: str
    winner: Entrant
    price: Decimal  # what the winner bids to the exchange, in the response currency
    losers: tuple[Entrant, ...]
    floor: Decimal


def partner_entrant(partner_bid: PartnerBid, *, currency: str,
                    usd_rates: dict[str, Decimal]) -> Entrant | None:
    partner = partner_bid.partner
    margin = Decimal(0) if partner_bid.bid.dealid else partner.margin
    net = partner_bid.bid.price * (1 - margin)
    try:
        net = convert(net, source=partner.currency, target=currency, usd_rates=usd_rates)
    except UnknownCurrency:
        return None
    return Entrant(partner_bid.bid, net, margin, partner_bid)


def run_auction(*, own_bids: list[Bid], partner_bids: list[PartnerBid], currency: str,
                floors: dict[str, Decimal], auction_type: int,
                usd_rates: dict[str, Decimal]) -> list[ImpResult]:
    """The winner of each impression that has an entrant at or above its floor (``floors``
    by imp id, in ``currency``). Ties go to our own bid, then to the earlier answer."""
    entrants: dict[str, list[Entrant]] = {}
    for bid in own_bids:
        if bid.impid not in entrants:  # our best only: a deal bid beside it must not set
            entrants[bid.impid] = [Entrant(bid, bid.price, Decimal(0))]  # our own price
    for partner_bid in partner_bids:
        entrant = partner_entrant(partner_bid, currency=currency, usd_rates=usd_rates)
        if entrant is not None:
            entrants.setdefault(partner_bid.bid.impid, []).append(entrant)
    results = []
    for imp_id, candidates in entrants.items():
        floor = floors.get(imp_id, Decimal(0))
        ranked = sorted((entrant for entrant in candidates if entrant.net >= floor),
                        key=lambda entrant: entrant.net, reverse=True)
        below = tuple(entrant for entrant in candidates if entrant.net < floor)
        if not ranked:
            continue  # losers below the floor of an imp nobody won are told by the caller
        winner = ranked[0]
        price = winner.net
        if auction_type == 2:
            runner_up = ranked[1].net if len(ranked) > 1 else floor
            price = min(winner.net, max(runner_up, floor) + INCREMENT)
        results.append(ImpResult(imp_id, winner, price, tuple(ranked[1:]) + below, floor))
    return results


def loss_code(result: ImpResult, loser: Entrant) -> int:
    """The OpenRTB loss reason a losing partner is told."""
    return LOSS_BELOW_FLOOR if loser.net < result.floor else LOSS_LOST_TO_HIGHER_BID
