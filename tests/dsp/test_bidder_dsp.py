"""DSP routing inside the bidder, end to end over its ASGI app, with partners as real local
HTTP servers."""

from __future__ import annotations

import dataclasses
import json
import time
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

from bidding.budget import user_key
from bidding.service import BidderService
from bidding.snapshot import CampaignEntry, Snapshot, encode
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import MemoryStore
from dsp.partners import PartnerEntry
from tests.bidding.bidder_fixtures import (
    EXCHANGES,
    broad_campaigns,
    campaign,
    client,
    config,
    creative,
    fixture,
)
from tests.dsp.partner_servers import bids, partner_server


async def bidder(tmp_path, *partners: PartnerEntry, enabled: bool = True,
                 campaigns: tuple[CampaignEntry, ...] = ()) -> BidderService:
    service = BidderService(config=dataclasses.replace(config(tmp_path), dsp_enabled=enabled),
                            bus=InProcessBus(), store=MemoryStore())
    await service.start()
    service.install(encode(Snapshot(version=1, created_at="2026-11-26T00:00:00Z",
                                    campaigns=campaigns or broad_campaigns(),
                                    exchanges=EXCHANGES, dsp_partners=partners)))
    return service


def partner(partner_id: int, url: str, **fields) -> PartnerEntry:
    return PartnerEntry(**{"id": partner_id, "name": f"P{partner_id}",
                           "seat": f"seat-{partner_id}", "endpoint_url": url, **fields})


async def post(service: BidderService, body: dict) -> tuple[int, dict]:
    async with client(service) as http:
        response = await http.post("/v1/bid", content=json.dumps(body).encode())
    return response.status_code, response.json() if response.status_code == 200 else {}


async def get(service: BidderService, url: str) -> int:
    parts = urlsplit(url)
    async with client(service) as http:
        return (await http.get(f"{parts.path}?{parts.query}")).status_code


async def test_a_partner_outbidding_our_campaigns_wins_and_hears_of_its_win(tmp_path):
    with partner_server(bids()) as notices:
        answer = bids(("1", 50.0, {}), notices_to=notices.url)
        with partner_server(answer) as dsp:
            service = await bidder(tmp_path, partner(1, dsp.url, margin=Decimal("0.2")))
            status, body = await post(service, fixture("banner-site-2.6.json"))
            [bid] = body["seatbid"][0]["bid"]
            assert (status, bid["price"], bid["crid"], body["seatbid"][0]["seat"]) == (
                200, 40, "cr0", "ce-seat")
            assert urlsplit(bid["nurl"]).path == "/v1/notice/dsp-win"
            assert await get(service, bid["nurl"].replace("${AUCTION_PRICE}", "20")) == 204
            assert await get(service, bid["nurl"].replace("${AUCTION_PRICE}", "20")) == 204
            forged = bid["nurl"].replace("${AUCTION_PRICE}", "20").replace("auction=", "auction=x")
            assert await get(service, forged) == 403
            await service.stop()
    [sent] = dsp.requests
    assert (sent["regs"]["gdpr"], sent["user"]["consent"][:4], sent["imp"][0]["bidfloor"]) == (
        1, "CPXe", 0.625)
    [win] = notices.notices
    assert dict(parse_qsl(urlsplit(win).query)) == {
        "auction": "req-banner-26", "bidid": "resp1", "imp": "1", "seat": "seat-1",
        "ad": "ad0", "price": "25.0000", "cur": "USD"}


async def test_our_campaign_outbids_the_partner_which_hears_it_lost(tmp_path):
    with partner_server(bids()) as notices:
        with partner_server(bids(("1", 0.6, {}), notices_to=notices.url)) as dsp:
            service = await bidder(tmp_path, partner(1, dsp.url))
            status, body = await post(service, fixture("banner-site-2.6.json"))
            await service.stop()
        [bid] = body["seatbid"][0]["bid"]
        assert (status, bid["cid"], urlsplit(bid["nurl"]).path) == (200, "1", "/v1/notice/win")
        [loss] = notices.wait_for_notices(1)
    assert dict(parse_qsl(urlsplit(loss).query))["loss"] == "102"


async def test_a_slow_partner_does_not_make_the_answer_late(tmp_path):
    with partner_server(bids(("1", 50.0, {})), delay_seconds=1.0) as slow:
        service = await bidder(tmp_path, partner(1, slow.url, timeout_ms=1000))
        started = time.perf_counter()
        status, body = await post(service, fixture("banner-site-2.6.json"))  # tmax 120
        elapsed = time.perf_counter() - started
        await service.stop()
    assert elapsed < 0.12
    assert (status, body["seatbid"][0]["bid"][0]["cid"]) == (200, "1")
    assert len(slow.requests) == 1


async def test_with_dsp_routing_off_nothing_is_sent(tmp_path):
    with partner_server(bids(("1", 50.0, {}))) as dsp:
        service = await bidder(tmp_path, partner(1, dsp.url), enabled=False)
        status, body = await post(service, fixture("banner-site-2.6.json"))
        await service.stop()
    assert (status, body["seatbid"][0]["bid"][0]["cid"]) == (200, "1")
    assert dsp.requests == []


async def test_our_bids_the_partner_auction_drops_give_their_holds_back(tmp_path):
    """Our open bid beats the partner and is sent; our deal bid beside it is not (only our
    best competes), so no notice will come for it: its budget and cap holds are freed."""
    deal = campaign(1, creative(11, "banner"), deal_ids=("d1",), frequency_cap_lifetime=1,
                    base_bid_cpm=Decimal(1), max_bid_cpm=Decimal("1.5"))
    open_campaign = campaign(2, creative(21, "banner"), base_bid_cpm=Decimal(5),
                             max_bid_cpm=Decimal(8))
    request = fixture("banner-site-2.6.json")
    request["imp"][0]["pmp"] = {"private_auction": 0, "deals": [{"id": "d1", "bidfloor": 0.5}]}
    with partner_server(bids(("1", 0.6, {}))) as server:
        service = await bidder(tmp_path, partner(1, server.url),
                               campaigns=(deal, open_campaign))
        status, body = await post(service, request)
        ledger = service.engine.ledger

        assert status == 200
        assert [bid["cid"] for bid in body["seatbid"][0]["bid"]] == ["2"]
        assert await ledger.hold_cap(user=user_key("ce-user-123"), campaign=deal,
                                     hold_id="probe")
        assert await ledger.spent(1) == 0
        await service.stop()
