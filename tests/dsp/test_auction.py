"""The auction between our own bids and partners' bids, on its own."""

from decimal import Decimal

from bidding.openrtb import Bid
from dsp.auction import INCREMENT, run_auction


def test_our_deal_bid_beside_our_open_bid_does_not_set_our_own_second_price():
    """The engine may answer an impression with its best open bid and the best deal bid
    beside it; against partners, only the best of ours competes."""
    own = [Bid(id="open", impid="1", price=Decimal("3.00")),
           Bid(id="deal", impid="1", price=Decimal("2.50"), dealid="d1")]

    [result] = run_auction(own_bids=own, partner_bids=[], currency="USD",
                           floors={"1": Decimal("1.00")}, auction_type=2, usd_rates={})

    assert (result.winner.bid.id, result.price) == ("open", Decimal("1.00") + INCREMENT)
    assert result.losers == ()
