"""A member's tier change reaches a running bidder at once and moves its bid by the tier's
boost: loyalty writes the profile through `bidding.profiles.profile_update` and announces it on
`profiles.updated`; the bidder prices with the boost of the campaign's program tier.
"""

import copy
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from bidding.pricing import bid_cpm
from bidding.service import BidderService
from campaign_express import platform
from loyalty import services
from tests.bidding.bidder_fixtures import campaign, client, config, creative, fixture, snapshot

pytestmark = pytest.mark.django_db(transaction=True)

USER = "u-live-boost"
BASE, MAX = Decimal("2.00"), Decimal("50.00")


@sync_to_async
def earn(program, amount: str, transaction_id: str) -> None:
    services.points_earn(program=program, user_id=USER, amount=Decimal(amount),
                         transaction_id=transaction_id)


async def test_a_member_s_tier_change_moves_a_live_bid_s_price_by_the_boost(tmp_path, program,
                                                                           monkeypatch):
    # The platform's own (embedded) bus and store: where loyalty writes and announces.
    service = BidderService(config=config(tmp_path), bus=platform.embedded_bus(),
                            store=platform.embedded_store())
    await service.start()
    try:
        # Newer than any the platform published for the program (its outbox ids).
        service.install(snapshot(campaign(1, creative(11, "banner"),
                                          loyalty_program_id=program.pk, base_bid_cpm=BASE,
                                          max_bid_cpm=MAX), version=2**40))
        ctrs: list[float] = []
        price = service.engine._price

        def observed(offer, ctr, currency, rates, **options):
            ctrs.append(ctr)  # the model's click-through rate the price was made from
            return price(offer, ctr, currency, rates, **options)

        monkeypatch.setattr(service.engine, "_price", observed)
        request = copy.deepcopy(fixture("banner-site-2.6.json"))
        request["user"]["buyeruid"] = USER

        async with client(service) as http:
            await earn(program, "10.00", "T-1")  # green: boost 1.0
            as_green = await http.post("/v1/bid", json=request)
            green_ctr = ctrs[-1]
            await earn(program, "600.00", "T-2")  # gold: boost 1.15
            as_gold = await http.post("/v1/bid", json={**request, "id": "req-2"})
            gold_ctr = ctrs[-1]

        def price_of(response) -> Decimal:
            return Decimal(str(response.json()["seatbid"][0]["bid"][0]["price"]))

        assert price_of(as_green) == bid_cpm(base_cpm=BASE, max_cpm=MAX, ctr=green_ctr)
        assert price_of(as_gold) == bid_cpm(base_cpm=BASE, max_cpm=MAX, ctr=gold_ctr,
                                            boost=Decimal("1.15"))
        assert price_of(as_gold) != bid_cpm(base_cpm=BASE, max_cpm=MAX, ctr=gold_ctr)
    finally:
        await service.stop()
