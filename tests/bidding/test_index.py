"""The campaign index decides exactly what a linear filter over every pair decides."""

from __future__ import annotations

import random
from decimal import Decimal

from bidding.index import CampaignIndex
from bidding.snapshot import CampaignEntry, CreativeEntry, ExchangeEntry, Snapshot

COUNTRIES = ("USA", "CAN", "DEU", "FRA", "GBR")
DEVICE_TYPES = ("phone", "tablet", "desktop", "ctv")
CATEGORIES = ("IAB1", "IAB1-2", "IAB2", "IAB3", "IAB3-1")
SIZES = ((300, 250), (728, 90), (320, 50))
DEALS = ("deal-a", "deal-b", "deal-c")
FORMATS = ("banner", "video", "native", "audio")
OPERATING_SYSTEMS = ("ios", "android", "windows")
MIMES = ("video/mp4", "video/webm", "audio/mpeg")
PROTOCOLS = (2, 3, 7, 8)


def creative(creative_id: int, format_: str = "banner",
             sizes: tuple[tuple[int, int], ...] = ((300, 250),), **fields) -> CreativeEntry:
    return CreativeEntry(id=creative_id, name=f"creative {creative_id}", format=format_,
                         sizes=sizes, **fields)


def campaign(campaign_id: int, creatives: tuple[CreativeEntry, ...],
             max_bid_cpm: Decimal = Decimal("2"), **targeting) -> CampaignEntry:
    return CampaignEntry(id=campaign_id, advertiser_id=1, name=f"campaign {campaign_id}",
                         currency="USD", time_zone="UTC", start_at=0, end_at=2_000_000_000,
                         total_budget=Decimal("100"), daily_budget=Decimal("10"),
                         base_bid_cpm=Decimal("1"), max_bid_cpm=max_bid_cpm,
                         creatives=creatives, **targeting)


def snapshot(*campaigns: CampaignEntry, exchanges: tuple[ExchangeEntry, ...] = ()
             ) -> Snapshot:
    return Snapshot(version=7, created_at="2026-11-26T00:00:00Z", campaigns=campaigns,
                    exchanges=exchanges)


def ids(candidates) -> list[tuple[int, int]]:
    return [(pair.campaign.id, pair.creative.id) for pair in candidates]


def brute_force(snap: Snapshot, *, format: str, size, country: str, device_type: str,
                deal_ids: tuple[str, ...], categories: tuple[str, ...],
                open_allowed: bool, os: str, mimes: tuple[str, ...],
                protocols: tuple[int, ...]) -> list[tuple[int, int]]:
    """The documented rules, one pair at a time."""
    with_parents = set(categories) | {category.split("-")[0] for category in categories}
    found = []
    for entry in sorted(snap.campaigns, key=lambda c: (-c.max_bid_cpm, c.id)):
        for item in sorted(entry.creatives, key=lambda c: c.id):
            passes = (
                item.format == format
                and (size is None or not item.sizes or size in item.sizes)
                and (not entry.countries or country in entry.countries)
                and (not entry.device_types or device_type in entry.device_types)
                and (not entry.categories or bool(with_parents & set(entry.categories)))
                and (bool(set(deal_ids) & set(entry.deal_ids)) if entry.deal_ids
                     else open_allowed)
                and (not entry.operating_systems or os in entry.operating_systems)
                and (format not in ("video", "audio") or (
                    (not mimes or bool(set(mimes) & set(item.mimes)))
                    and (not protocols or bool(set(protocols) & set(
                        item.protocols if item.markup else (7,)))))))
            if passes:
                found.append((entry.id, item.id))
    return found


def _some(rng: random.Random, values: tuple, share: float) -> tuple:
    return tuple(rng.sample(values, rng.randint(1, 2))) if rng.random() < share else ()


def random_snapshot(rng: random.Random, count: int) -> Snapshot:
    campaigns, creative_id = [], 0
    for campaign_id in rng.sample(range(1, 10 * count), count):
        creatives = []
        for _ in range(rng.randint(1, 3)):
            creative_id += 1
            format_ = rng.choice(FORMATS)
            sizes = _some(rng, SIZES, 0.8) if format_ != "native" else ()
            timed = {"mimes": _some(rng, MIMES, 0.9), "protocols": _some(rng, PROTOCOLS, 0.7),
                     "markup": "<VAST/>" if rng.random() < 0.5 else ""
                     } if format_ in ("video", "audio") else {}
            creatives.append(creative(creative_id, format_, sizes, **timed))
        campaigns.append(campaign(
            campaign_id, tuple(creatives), countries=_some(rng, COUNTRIES, 0.5),
            operating_systems=_some(rng, OPERATING_SYSTEMS, 0.3),
            device_types=_some(rng, DEVICE_TYPES, 0.4), categories=_some(rng, CATEGORIES, 0.3),
            deal_ids=_some(rng, DEALS, 0.2), max_bid_cpm=Decimal(rng.randint(2, 9))))
    return snapshot(*campaigns)


def test_index_equals_a_linear_filter_over_random_campaigns_and_requests():
    rng = random.Random(20261126)
    checked_nonempty = 0
    for _ in range(20):
        snap = random_snapshot(rng, 200)
        index = CampaignIndex.build(snap)
        for _ in range(100):
            request = {
                "format": rng.choice(FORMATS),
                "size": rng.choice((None, *SIZES, (1, 1))),
                "country": rng.choice((*COUNTRIES, "", "JPN")),
                "device_type": rng.choice((*DEVICE_TYPES, "")),
                "deal_ids": _some(rng, (*DEALS, "deal-unknown"), 0.3),
                "categories": _some(rng, (*CATEGORIES, "IAB9"), 0.6),
                "open_allowed": rng.random() < 0.8,
                "os": rng.choice((*OPERATING_SYSTEMS, "", "linux")),
                "mimes": _some(rng, (*MIMES, "video/ogg"), 0.6),
                "protocols": _some(rng, PROTOCOLS, 0.6),
            }
            expected = brute_force(snap, **request)
            assert ids(index.candidates(**request)) == expected, request
            checked_nonempty += bool(expected)
    assert checked_nonempty > 1000  # the comparison is not vacuous


def test_campaigns_without_a_restriction_match_any_value_of_that_facet():
    snap = snapshot(
        campaign(1, (creative(11),)),
        campaign(2, (creative(21),), countries=("USA",), device_types=("phone",)),
        campaign(3, (creative(31),), countries=("DEU",)),
    )
    index = CampaignIndex.build(snap)
    request = {"format": "banner", "size": (300, 250), "device_type": "phone"}
    assert ids(index.candidates(country="USA", **request)) == [(1, 11), (2, 21)]
    assert ids(index.candidates(country="DEU", **request)) == [(1, 11), (3, 31)]
    assert ids(index.candidates(country="", **request)) == [(1, 11)]
    assert ids(index.candidates(country="JPN", format="banner", size=(300, 250),
                                device_type="ctv")) == [(1, 11)]


def test_sizes_formats_and_categories():
    snap = snapshot(
        campaign(1, (creative(11, "banner", ((300, 250), (728, 90))),
                     creative(12, "native", ()), creative(13, "video", ()))),
        campaign(2, (creative(21, "banner", ((320, 50),)),), categories=("IAB1",)),
    )
    index = CampaignIndex.build(snap)
    common = {"country": "USA", "device_type": "phone"}
    assert ids(index.candidates(format="banner", size=(728, 90), **common)) == [(1, 11)]
    assert ids(index.candidates(format="banner", size=None, **common)) == [(1, 11)]
    assert ids(index.candidates(format="banner", size=None, categories=("IAB1-4",),
                                **common)) == [(1, 11), (2, 21)]
    assert ids(index.candidates(format="banner", size=(320, 50), categories=("IAB2",),
                                **common)) == []
    assert ids(index.candidates(format="video", size=(640, 360), **common)) == [(1, 13)]
    assert ids(index.candidates(format="audio", size=None, **common)) == []


def test_deal_campaigns_bid_only_on_their_deals_and_private_auctions_exclude_open_ones():
    snap = snapshot(
        campaign(1, (creative(11),)),
        campaign(2, (creative(21),), deal_ids=("deal-a",)),
        campaign(3, (creative(31),), deal_ids=("deal-a", "deal-b")),
    )
    index = CampaignIndex.build(snap)
    request = {"format": "banner", "size": (300, 250), "country": "USA", "device_type": ""}
    assert ids(index.candidates(**request)) == [(1, 11)]
    assert ids(index.candidates(deal_ids=("deal-b",), **request)) == [(1, 11), (3, 31)]
    assert ids(index.candidates(deal_ids=("deal-a",), open_allowed=False, **request)) == [
        (2, 21), (3, 31)]
    assert ids(index.candidates(deal_ids=("deal-z",), open_allowed=False, **request)) == []


def test_exchanges_version_and_an_empty_snapshot():
    default = ExchangeEntry(slug="openx", name="OpenX", seat="s1", is_default=True)
    other = ExchangeEntry(slug="magnite", name="Magnite", seat="s2")
    index = CampaignIndex.build(snapshot(exchanges=(other, default)))
    assert index.version == 7
    assert len(index) == 0
    assert index.exchange("magnite") is other
    assert index.exchange("missing") is None
    assert index.default_exchange() is default
    assert list(index.candidates(format="banner", size=None, country="USA",
                                 device_type="phone")) == []
    assert CampaignIndex.build(snapshot()).default_exchange() is None


def test_operating_systems_mime_types_and_protocols():
    """Our own VAST is 4.0 (protocol 7); third-party markup speaks its listed protocols; a
    timed creative without MIME types matches no list of them; banners have neither."""
    snap = snapshot(
        campaign(1, (creative(11, "video", (), mimes=("video/mp4",)),
                     creative(12, "video", (), mimes=("video/mp4", "video/webm"),
                              protocols=(2, 3), markup="<VAST version=\"3.0\"/>"),
                     creative(13, "video", ()))),
        campaign(2, (creative(21),), operating_systems=("ios",)),
    )
    index = CampaignIndex.build(snap)
    video = {"format": "video", "size": None, "country": "USA", "device_type": "phone"}
    assert ids(index.candidates(**video)) == [(1, 11), (1, 12), (1, 13)]
    assert ids(index.candidates(**video, mimes=("video/mp4",))) == [(1, 11), (1, 12)]
    assert ids(index.candidates(**video, mimes=("video/webm",))) == [(1, 12)]
    assert ids(index.candidates(**video, protocols=(7,))) == [(1, 11), (1, 13)]
    assert ids(index.candidates(**video, protocols=(3, 8))) == [(1, 12)]
    banner = {"format": "banner", "size": (300, 250), "country": "USA", "device_type": "phone",
              "mimes": ("video/mp4",), "protocols": (2,)}
    assert ids(index.candidates(**banner, os="ios")) == [(2, 21)]
    assert ids(index.candidates(**banner, os="android")) == []
    assert ids(index.candidates(**banner)) == []
