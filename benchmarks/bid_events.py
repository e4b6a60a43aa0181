"""What the bid path pays for its analytics events: building them and putting them in the
buffer (`bidding.events.BidEvents`), per request and per event. Prints what it measures.

    .venv/bin/python benchmarks/bid_events.py [--calls 20000] [--repeat 15]

Each case runs `--calls` times, `--repeat` rounds; the fastest round is reported (the others
were slowed by whatever else the machine ran). The buffer is drained between rounds, so
none of them is measuring a full buffer's drop path.
"""

from __future__ import annotations

import argparse
import sys
import timeit
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analytics.events import Event, EventType  # noqa: E402
from analytics.pipeline import EventBuffer  # noqa: E402
from bidding.engine import Outcome  # noqa: E402
from bidding.events import BidEvents  # noqa: E402
from bidding.index import CampaignIndex  # noqa: E402
from bidding.nbr import NoBid  # noqa: E402
from bidding.openrtb import Bid, BidResponse, SeatBid, decode_request, normalize  # noqa: E402
from bidding.snapshot import (  # noqa: E402
    CampaignEntry,
    CreativeEntry,
    ExchangeEntry,
    Snapshot,
)

REQUEST = ROOT / "tests" / "bidding" / "fixtures" / "banner-site-2.6.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=15)
    arguments = parser.parse_args()

    exchange = ExchangeEntry(slug="open", name="Open", seat="ce-seat", is_default=True)
    creative = CreativeEntry(id=11, name="Creative 11", format="banner", sizes=((300, 250),))
    campaign = CampaignEntry(
        id=1, advertiser_id=7, name="Campaign 1", currency="USD", time_zone="UTC", start_at=0,
        end_at=2**31, total_budget=Decimal(1000), daily_budget=Decimal(100),
        base_bid_cpm=Decimal(2), max_bid_cpm=Decimal(6), creatives=(creative,))
    index = CampaignIndex.build(Snapshot(version=1, created_at="2026-01-01T00:00:00Z",
                                         campaigns=(campaign,), exchanges=(exchange,)))
    request = normalize(decode_request(REQUEST.read_bytes()))
    bid = Bid(id="0" * 32, impid="1", price=Decimal("1.23456789"), cid="1", crid="11",
              mtype=1)
    refusals = Counter({"geo": 3, "below_floor": 1})
    bidding = Outcome(response=BidResponse(id=request.request_id, cur="USD",
                                           seatbid=[SeatBid(bid=[bid], seat="ce-seat")]),
                      refusals=refusals, model_version="1", scored=2)
    no_bid = Outcome(reason=NoBid.BELOW_FLOOR, refusals=refusals, model_version="1", scored=2)
    notice = {"auction": request.request_id, "imp": "1", "bid": bid.id, "campaign": "1",
              "creative": "11", "exchange": "open", "cur": "USD", "hold": "1",
              "user": "3f01c01bdd39899f", "test": ""}
    events = BidEvents(buffer=EventBuffer(capacity=10**9), node="bidder-1")

    cases: list[tuple[str, int, Callable[[], object]]] = [
        ("bid: bid_request + bid", 2, lambda: events.answered(
            request, exchange=exchange, outcome=bidding, index=index, latency_us=1_234)),
        ("no-bid: bid_request + no_bid", 2, lambda: events.answered(
            request, exchange=exchange, outcome=no_bid, index=index, latency_us=1_234)),
        ("billing notice", 1, lambda: events.notice(
            "billing", notice, index=index, price_micros=1_500, currency="USD")),
        ("Event() alone, for reference", 1, lambda: Event(
            event_type=EventType.BID, node="bidder-1", request_id=request.request_id)),
    ]
    print(f"{'case':<32}{'events':>7}{'µs/call':>10}{'µs/event':>10}")
    for name, count, call in cases:
        rounds = []
        for _ in range(arguments.repeat):
            rounds.append(timeit.timeit(call, number=arguments.calls))
            events.buffer.drain(10**9)
        seconds = min(rounds) / arguments.calls
        print(f"{name:<32}{count:>7}{seconds * 1e6:>10.2f}{seconds * 1e6 / count:>10.2f}")


if __name__ == "__main__":
    main()
