"""DSP routing against real partner HTTP servers: deadline, validation, auction, margin,
notices, shared limits and the breaker."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import pytest

from analytics.pipeline import EventBuffer
from bidding.openrtb import Bid, BidResponse, SeatBid, decode_request, normalize
from campaign_express.backends.store import MemoryStore, RedisStore
from dsp.limits import ADMITTED, QPS_LIMITED, BreakerSettings, PartnerLimits
from dsp.partners import PartnerEntry
from dsp.service import DspRouting
from tests.campaign_express.platform import ROOT
from tests.dsp.partner_servers import bids, partner_server

SECRET = b"s" * 32
RATES = {"USD": Decimal(1), "EUR": Decimal("0.5")}


def raw_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "id": "auction-1", "tmax": 150, "at": 1, "cur": ["USD"],
        "imp": [{"id": "1", "banner": {"w": 300, "h": 250}, "bidfloor": 1.0,
                 "bidfloorcur": "USD"}],
        "site": {"domain": "news.example", "page": "https://news.example/a"},
        "device": {"devicetype": 4, "ifa": "ifa-1", "ip": "203.0.113.7",
                   "geo": {"country": "USA", "lat": 1.5, "lon": 2.5}},
        "user": {"id": "user-1", "buyeruid": "buyer-1", "consent": "CONSENT"},
        "regs": {"gdpr": 1},
        "bcat": ["IAB25"], "badv": ["blocked.example"]}
    request.update(changes)
    return request


def view(raw: dict[str, Any]):
    return normalize(decode_request(msgspec.json.encode(raw)))


def partner(partner_id: int, url: str, **fields: Any) -> PartnerEntry:
    values: dict[str, Any] = {"id": partner_id, "name": f"P{partner_id}",
                              "seat": f"seat-{partner_id}", "endpoint_url": url}
    values.update(fields)
    return PartnerEntry(**values)


def own_response(price: str) -> BidResponse:
    return BidResponse(id="auction-1", bidid="ours", cur="USD", seatbid=[SeatBid(
        seat="our-seat", bid=[Bid(id="own-bid", impid="1", price=Decimal(price),
                                  adm="<div>own</div>", crid="7")])])


def routing(store=None, **kwargs: Any) -> DspRouting:
    return DspRouting(store=store or MemoryStore(), secret=SECRET,
                      public_url="https://bidder.example", node="n1",
                      buffer=EventBuffer(capacity=1000), **kwargs)


async def run(dsp: DspRouting, raw: dict[str, Any], partners, *, own=None,
              budget_ms: float = 200) -> BidResponse | None:
    return await dsp.run(raw, view(raw), own=own, partners=tuple(partners),
                         budget_ms=budget_ms, currency="USD", seat="our-seat", usd_rates=RATES)


def events(dsp: DspRouting) -> list[tuple[str, str, str]]:
    assert dsp.buffer is not None
    return sorted((event.event_type.value, event.partner, event.reason)
                  for event in dsp.buffer.drain(1000))


def test_a_slow_partner_is_cut_off_at_the_deadline_and_the_answer_is_in_time() -> None:
    async def scenario() -> None:
        with (partner_server(bids(("1", 2.0, {}))) as fast,
              partner_server(bids(("1", 9.0, {})), delay_seconds=1.0) as slow):
            dsp = routing()
            started = time.perf_counter()
            response = await run(dsp, raw_request(), [partner(1, fast.url),
                                                      partner(2, slow.url)], budget_ms=100)
            elapsed = time.perf_counter() - started
            await dsp.close()
        assert elapsed < 0.3
        assert response is not None
        [bid] = response.seatbid[0].bid
        assert (bid.price, bid.crid, bid.ext) == (Decimal("2.0"), "cr0",
                                                  {"dsp": {"seat": "seat-1", "margin": "0"}})
        assert len(slow.requests) == 1
        assert events(dsp) == [("dsp_sent", "seat-1", "bid"), ("dsp_timeout", "seat-2", "timeout"),
                               ("dsp_won", "seat-1", "")]

    asyncio.run(scenario())


def test_invalid_bids_are_dropped_with_their_reasons() -> None:
    invalid = bids(("9", 3.0, {}), ("1", 0.5, {}), ("1", 3.0, {"adm": None}),
                   ("1", 3.0, {"crid": None}), ("1", 3.0, {"adomain": ["Blocked.example"]}),
                   ("1", 3.0, {"cat": ["IAB25"]}), ("1", 1.5, {"crid": "good"}))

    async def scenario() -> None:
        with (partner_server(invalid) as server,
              partner_server(bids(("1", 5.0, {}), cur="EUR")) as euro):
            dsp = routing()
            response = await run(dsp, raw_request(), [partner(1, server.url),
                                                      partner(2, euro.url)])
            routed = await dsp.router.route(raw_request(), view(raw_request()),
                                            partners=(partner(1, server.url),
                                                      partner(2, euro.url)),
                                            budget_ms=200, usd_rates=RATES)
            await dsp.close()
        assert response is not None
        assert [bid.crid for bid in response.seatbid[0].bid] == ["good"]
        assert sorted(routed.calls[0].dropped) == ["below_floor", "blocked_adomain",
                                                   "blocked_category", "missing_crid",
                                                   "missing_markup", "unknown_impid"]
        assert routed.calls[1].dropped == ["wrong_currency"]
        assert routed.calls[1].outcome == "no_bid"

    asyncio.run(scenario())


@pytest.mark.parametrize(("auction_type", "price"), [(1, Decimal("2.4")),
                                                     (2, Decimal("2.01"))])
def test_the_auction_picks_the_winner_net_of_margin_at_first_and_second_price(
        auction_type: int, price: Decimal) -> None:
    async def scenario() -> None:
        with (partner_server(bids(("1", 3.0, {}))) as high,
              partner_server(bids(("1", 1.8, {}))) as low):
            dsp = routing()
            response = await run(dsp, raw_request(at=auction_type),
                                 [partner(1, high.url, margin=Decimal("0.2")),
                                  partner(2, low.url)], own=own_response("2.00"))
            await dsp.close()
        assert response is not None
        [bid] = response.seatbid[0].bid
        assert (bid.price, bid.crid, bid.ext["dsp"]) == (price, "cr0",
                                                         {"seat": "seat-1", "margin": "0.2"})
        # The partner was sent the floor grossed up by the margin.
        assert high.requests[0]["imp"][0]["bidfloor"] == 1.25
        assert low.requests[0]["imp"][0]["bidfloor"] == 1.0

    asyncio.run(scenario())


def test_our_own_bid_wins_when_higher_and_the_partner_hears_it_lost() -> None:
    async def scenario() -> None:
        with partner_server(bids()) as notices:
            answer = bids(("1", 3.0, {}), notices_to=notices.url)
            with partner_server(answer) as server:
                dsp = routing()
                response = await run(dsp, raw_request(),
                                     [partner(1, server.url, margin=Decimal("0.5"))],
                                     own=own_response("2.00"))
                await dsp.close()
        assert response is not None
        assert [bid.id for bid in response.seatbid[0].bid] == ["own-bid"]
        [loss] = notices.notices
        assert loss == ("/loss?auction=auction-1&bidid=resp1&imp=1&seat=seat-1&ad=ad0&price="
                        "&cur=USD&loss=102")

    asyncio.run(scenario())


def test_a_deal_bid_keeps_its_price_without_margin() -> None:
    async def scenario() -> None:
        with partner_server(bids(("1", 3.0, {"dealid": "deal-1"}))) as server:
            dsp = routing()
            response = await run(dsp, raw_request(),
                                 [partner(1, server.url, margin=Decimal("0.2"))])
            await dsp.close()
        assert response is not None
        [bid] = response.seatbid[0].bid
        assert (bid.price, bid.dealid, bid.ext["dsp"]["margin"]) == (Decimal("3.0"), "deal-1",
                                                                     "0")

    asyncio.run(scenario())


def test_win_and_billing_notices_reach_the_partner_with_its_price_and_macros() -> None:
    async def scenario() -> None:
        with partner_server(bids()) as notices:
            answer = bids(("1", 3.0, {}), notices_to=notices.url)
            with partner_server(answer) as server:
                dsp = routing()
                response = await run(dsp, raw_request(),
                                     [partner(1, server.url, margin=Decimal("0.2"))])
                assert response is not None
                [bid] = response.seatbid[0].bid
                assert bid.nurl is not None and bid.burl is not None
                for url in (bid.nurl, bid.burl, bid.nurl):
                    query = {key: values[0] for key, values in
                             parse_qs(urlsplit(url.replace("${AUCTION_PRICE}", "2.0")).query,
                                      keep_blank_values=True).items()}
                    kind = urlsplit(url).path.rsplit("/", 1)[1].removeprefix("dsp-")
                    assert await dsp.forwarder.handle(kind, query) == 204
                forged = dict(query, price="9")
                forged["auction"] = "other"
                assert await dsp.forwarder.handle("win", forged) == 403
                await dsp.forwarder.drain()
                spend = await dsp.limits.state(partner_id=1)
                await dsp.close()
        # 2.0 clearing / (1 - 0.2) = 2.5 for the partner; the repeated win is not forwarded.
        macros = "auction=auction-1&bidid=resp1&imp=1&seat=seat-1&ad=ad0&price=2.5000&cur=USD"
        assert sorted(notices.notices) == [f"/bill?{macros}", f"/win?{macros}"]
        assert spend["spend_today_micros"] == 2500

    asyncio.run(scenario())


def test_each_partner_gets_its_openrtb_version_and_no_user_data_without_consent() -> None:
    async def scenario() -> None:
        with (partner_server(bids()) as old, partner_server(bids()) as new):
            dsp = routing()
            raw = raw_request(regs={"gdpr": 1}, user={"id": "user-1", "consent": ""},
                              wseat=["seat-1", "seat-2"])
            await run(dsp, raw, [partner(1, old.url, openrtb_version="2.5"),
                                 partner(2, new.url), partner(3, new.url)])
            await dsp.close()
        [sent_old], [sent_new] = old.requests, new.requests
        assert sent_old["regs"] == {"ext": {"gdpr": 1}}
        assert sent_new["regs"] == {"gdpr": 1}
        assert sent_old["user"] == {"ext": {"consent": ""}}
        assert sent_new["user"] == {"consent": ""}
        assert sent_new["device"] == {"devicetype": 4, "ip": "203.0.113.0",
                                      "geo": {"country": "USA"}}
        assert sent_new["wseat"] == ["seat-1", "seat-2"]
        assert old.headers[0]["x-openrtb-version"] == "2.5"
        assert 150 < sent_new["tmax"] <= 200  # what is left of our budget, at most its timeout

    asyncio.run(scenario())


def test_partners_whose_filters_do_not_match_are_not_called() -> None:
    async def scenario() -> None:
        with partner_server(bids()) as server:
            dsp = routing()
            await run(dsp, raw_request(), [
                partner(1, server.url, formats=("video",)),
                partner(2, server.url, countries=("DEU",)),
                partner(3, server.url, device_types=("ctv",))])
            await dsp.close()
        assert server.requests == []

    asyncio.run(scenario())


def test_the_breaker_opens_after_errors_and_closes_after_a_good_probe() -> None:
    state = {"status": 500}

    def answer(request: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        if state["status"] == 500:
            return 500, {"error": "down"}
        return 204, None

    async def scenario() -> None:
        with partner_server(answer) as server:
            dsp = routing(breaker=BreakerSettings(threshold=2, cooldown_ms=300))
            partners = [partner(1, server.url)]
            for _ in range(4):
                await run(dsp, raw_request(), partners)
            assert len(server.requests) == 2
            assert (await dsp.limits.state(partner_id=1))["breaker"] == "open"
            await asyncio.sleep(0.35)
            assert (await dsp.limits.state(partner_id=1))["breaker"] == "half_open"
            state["status"] = 204
            await run(dsp, raw_request(), partners)
            assert (await dsp.limits.state(partner_id=1))["breaker"] == "closed"
            await run(dsp, raw_request(), partners)
            await dsp.close()
        assert len(server.requests) == 4

    asyncio.run(scenario())


def test_qps_limit_holds_across_two_bidders_on_one_redis(redis_url: str) -> None:
    partner_id = random.randrange(10**6, 10**9)

    async def scenario() -> None:
        first, second = RedisStore(redis_url), RedisStore(redis_url)
        limits = [PartnerLimits(first), PartnerLimits(second)]
        now = time.time()
        results = [await limits[number % 2].admit(partner_id=partner_id, qps_limit=3,
                                                  cap_micros=0, now=now)
                   for number in range(5)]
        later = await limits[1].admit(partner_id=partner_id, qps_limit=3, cap_micros=0,
                                      now=now + 1)
        await first.close()
        await second.close()
        assert results == [ADMITTED] * 3 + [QPS_LIMITED] * 2
        assert later == ADMITTED

    asyncio.run(scenario())


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_daily_spend_cap_stops_calls(backend: str, request: pytest.FixtureRequest) -> None:
    partner_id = random.randrange(10**6, 10**9)

    async def scenario() -> None:
        store = MemoryStore() if backend == "memory" else RedisStore(
            request.getfixturevalue("redis_url"))
        with partner_server(bids(("1", 2.0, {}))) as server:
            dsp = routing(store)
            capped = partner(partner_id, server.url, daily_spend_cap=Decimal("0.002"))
            await run(dsp, raw_request(), [capped])
            await dsp.limits.add_spend(partner_id=partner_id, micros=2000)
            assert await run(dsp, raw_request(), [capped]) is None
            await dsp.close()
        await store.close()
        assert len(server.requests) == 1
        assert events(dsp)[-1] == ("dsp_won", f"seat-{partner_id}", "")

    asyncio.run(scenario())


ADMIT_FROM_A_PROCESS = """
import asyncio, sys
from campaign_express.backends.store import RedisStore
from dsp.limits import PartnerLimits

async def main():
    store = RedisStore(sys.argv[1])
    limits = PartnerLimits(store)
    results = [await limits.admit(partner_id=int(sys.argv[2]), qps_limit=6, cap_micros=0,
                                  now=float(sys.argv[3])) for _ in range(5)]
    await store.close()
    print(sum(1 for result in results if result == 0))

asyncio.run(main())
"""


def test_qps_limit_holds_across_two_bidder_processes(redis_url: str) -> None:
    partner_id = random.randrange(10**6, 10**9)
    now = str(time.time())
    processes = [subprocess.Popen([sys.executable, "-c", ADMIT_FROM_A_PROCESS, redis_url,
                                   str(partner_id), now], cwd=ROOT, stdout=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    admitted = [int(process.communicate(timeout=30)[0]) for process in processes]

    assert sum(admitted) == 6
