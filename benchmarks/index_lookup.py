"""Campaign index lookups against a linear scan, over generated campaigns. Prints what it
measures; nothing is estimated.

    .venv/bin/python benchmarks/index_lookup.py [--campaigns 10000] [--seconds 2] [--seed 7]

Campaigns get 1-3 creatives and random targeting: about half target a few countries, a third
device types, a quarter content categories, one in twenty deals. Each request shape is looked
up repeatedly for ``--seconds`` with `CampaignIndex.candidates`, then with a linear scan over
every (campaign, creative) pair making the same decision; the two must return the same pairs.
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bidding.index import CampaignIndex, Candidate  # noqa: E402
from bidding.snapshot import CampaignEntry, CreativeEntry, Snapshot  # noqa: E402

COUNTRIES = ("USA", "CAN", "GBR", "DEU", "FRA", "NLD", "ESP", "ITA", "BRA", "MEX", "JPN",
             "AUS", "IND", "AUT", "CHE", "SWE", "POL", "BEL", "IRL", "PRT")
DEVICE_TYPES = ("mobile", "desktop", "ctv", "phone", "tablet", "connected_device")
CATEGORIES = tuple(f"IAB{n}" for n in range(1, 27))
BANNER_SIZES = ((300, 250), (728, 90), (320, 50), (160, 600), (300, 600))

SHAPES: dict[str, dict] = {
    "banner 300x250 USA phone, 1 category": {
        "format": "banner", "size": (300, 250), "country": "USA", "device_type": "phone",
        "categories": ("IAB1-2",)},
    "video 640x360 DEU ctv": {
        "format": "video", "size": (640, 360), "country": "DEU", "device_type": "ctv"},
    "native, unknown country, desktop": {
        "format": "native", "size": None, "country": "", "device_type": "desktop"},
    "banner 728x90 GBR desktop, private deal": {
        "format": "banner", "size": (728, 90), "country": "GBR", "device_type": "desktop",
        "deal_ids": ("deal-7",), "open_allowed": False},
}


def generate(count: int, seed: int) -> Snapshot:
    rng = random.Random(seed)
    campaigns = []
    creative_id = 0
    for campaign_id in range(1, count + 1):
        creatives = []
        for _ in range(rng.randint(1, 3)):
            creative_id += 1
            format_ = rng.choice(("banner", "banner", "video", "native"))
            sizes: tuple[tuple[int, int], ...] = ()
            if format_ == "banner":
                sizes = tuple(rng.sample(BANNER_SIZES, rng.randint(1, 2)))
            elif format_ == "video" and rng.random() < 0.5:
                sizes = ((640, 360),)
            creatives.append(CreativeEntry(id=creative_id, name=f"c{creative_id}",
                                           format=format_, sizes=sizes))
        campaigns.append(CampaignEntry(
            id=campaign_id, advertiser_id=campaign_id % 50, name=f"campaign {campaign_id}",
            currency="USD", time_zone="UTC", start_at=0, end_at=2_000_000_000,
            total_budget=Decimal(1000), daily_budget=Decimal(100), base_bid_cpm=Decimal(1),
            max_bid_cpm=Decimal(2),
            countries=tuple(rng.sample(COUNTRIES, rng.randint(1, 4)))
            if rng.random() < 0.5 else (),
            device_types=tuple(rng.sample(DEVICE_TYPES, rng.randint(1, 2)))
            if rng.random() < 0.33 else (),
            categories=tuple(rng.sample(CATEGORIES, rng.randint(1, 3)))
            if rng.random() < 0.25 else (),
            deal_ids=(f"deal-{rng.randint(1, 40)}",) if rng.random() < 0.05 else (),
            creatives=tuple(creatives)))
    return Snapshot(version=1, created_at="2026-11-26T00:00:00Z", campaigns=tuple(campaigns))


def linear_scan(pairs: list[Candidate], *, format: str, size: tuple[int, int] | None,
                country: str, device_type: str, deal_ids: tuple[str, ...] = (),
                categories: tuple[str, ...] = (), open_allowed: bool = True
                ) -> tuple[Candidate, ...]:
    wanted_categories = set(categories) | {c.partition("-")[0] for c in categories}
    found = []
    for pair in pairs:
        campaign, creative = pair
        if creative.format != format:
            continue
        if size is not None and creative.sizes and size not in creative.sizes:
            continue
        if campaign.countries and country not in campaign.countries:
            continue
        if campaign.device_types and device_type not in campaign.device_types:
            continue
        if campaign.categories and wanted_categories.isdisjoint(campaign.categories):
            continue
        if campaign.deal_ids:
            if set(deal_ids).isdisjoint(campaign.deal_ids):
                continue
        elif not open_allowed:
            continue
        found.append(pair)
    return tuple(found)


def measure(lookup, seconds: float) -> tuple[int, float]:
    calls, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        for _ in range(20):
            lookup()
        calls += 20
        now = time.perf_counter()
        if now >= deadline:
            return calls, now - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=7)
    arguments = parser.parse_args()

    snapshot = generate(arguments.campaigns, arguments.seed)
    started = time.perf_counter()
    index = CampaignIndex.build(snapshot)
    build_ms = (time.perf_counter() - started) * 1000
    pairs = [Candidate(campaign, creative, 0) for campaign in snapshot.campaigns
             for creative in campaign.creatives]
    print(f"{arguments.campaigns} campaigns, {len(index)} (campaign, creative) pairs; "
          f"index built in {build_ms:.0f} ms")
    print(f"{'request shape':<42} {'results':>7} {'method':>8} {'lookups/s':>11} "
          f"{'µs/lookup':>10}")
    for name, shape in SHAPES.items():
        expected = linear_scan(pairs, **shape)
        found = tuple(index.candidates(**shape))
        if found != expected:
            raise SystemExit(f"{name}: the index and the scan disagree")
        # The index's lookups are lazy: "index" takes them all, "index, first 16" what the
        # bidder takes at most for an impression.
        for method, lookup in (("index", lambda shape=shape: tuple(index.candidates(**shape))),
                               ("first 16", lambda shape=shape: tuple(
                                   itertools.islice(index.candidates(**shape), 16))),
                               ("scan", lambda shape=shape: linear_scan(pairs, **shape))):
            calls, elapsed = measure(lookup, arguments.seconds)
            print(f"{name:<42} {len(found):>7} {method:>8} {calls / elapsed:>11,.0f} "
                  f"{elapsed / calls * 1e6:>10.1f}")


if __name__ == "__main__":
    main()
