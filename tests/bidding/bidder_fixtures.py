"""A bidder on embedded backends with a snapshot built in the test (no Django)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import httpx

from bidding.app import BidderApp
from bidding.service import BidderService
from bidding.snapshot import CampaignEntry, CreativeEntry, ExchangeEntry, Snapshot, encode
from campaign_express import env
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import MemoryStore, Script, StoreUnavailable

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = b"s" * 40  # the bidder's secret key in these tests: it signs notice URLs
NOW = time.time()


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def creative(creative_id: int, format_: str, **overrides) -> CreativeEntry:
    base = {
        "banner": {"sizes": ((300, 250), (728, 90)),
                   "asset_url": f"https://cdn.example/{creative_id}.png"},
        "video": {"sizes": ((640, 360),), "asset_url": f"https://cdn.example/{creative_id}.mp4",
                  "mimes": ("video/mp4",), "protocols": (2, 3, 7), "duration_seconds": 15},
        "audio": {"asset_url": f"https://cdn.example/{creative_id}.mp3",
                  "mimes": ("audio/mpeg", "audio/mp4"), "duration_seconds": 30},
        "native": {"asset_url": f"https://cdn.example/{creative_id}.jpg"},
    }[format_]
    return CreativeEntry(**{"id": creative_id, "name": f"Creative {creative_id}",
                            "format": format_, "adomain": "brand.example",
                            "click_url": "https://brand.example/landing", **base, **overrides})


def campaign(campaign_id: int, *creatives: CreativeEntry, **overrides) -> CampaignEntry:
    return CampaignEntry(**{
        "id": campaign_id, "advertiser_id": 1, "name": f"Campaign {campaign_id}",
        "currency": "USD", "time_zone": "UTC", "start_at": int(NOW - 86_400),
        "end_at": int(NOW + 86_400), "total_budget": Decimal(1000),
        "daily_budget": Decimal(100), "base_bid_cpm": Decimal("2.00"),
        "max_bid_cpm": Decimal("6.00"), "creatives": creatives, **overrides})


def broad_campaigns() -> tuple[CampaignEntry, ...]:
    """Campaigns that target nothing, with creatives of every format and common sizes."""
    sizes = ((300, 250), (728, 90), (320, 50), (300, 600), (160, 600), (320, 480),
             (480, 320), (300, 50), (970, 250), (468, 60), (640, 480), (1024, 768))
    return (campaign(1, creative(11, "banner", sizes=sizes)),
            campaign(2, creative(21, "video", sizes=()), creative(22, "audio"),
                     base_bid_cpm=Decimal(10), max_bid_cpm=Decimal(20)),
            campaign(3, creative(31, "native")))


EXCHANGES = (
    ExchangeEntry(slug="open", name="Open", seat="ce-seat", is_default=True),
    ExchangeEntry(slug="reasons", name="Reasons", seat="ce-seat", no_bid_style="nbr"),
    ExchangeEntry(slug="secured", name="Secured", seat="ce-seat", auth="token",
                  token_sha256="9d71c4546b6227cd18ad5d491db9630ad168286ff76cb3f63756547cfd24b241"),
    ExchangeEntry(slug="private", name="Private", seat="ce-seat", auth="ip",
                  allowed_networks=("10.0.0.0/8",)),
)


def snapshot(*campaigns: CampaignEntry, version: int = 1,
             exchanges: tuple[ExchangeEntry, ...] = EXCHANGES) -> bytes:
    return encode(Snapshot(version=version, created_at="2026-11-26T00:00:00Z",
                           campaigns=campaigns, exchanges=exchanges,
                           usd_rates={"EUR": Decimal("0.92"), "GBP": Decimal("0.79")}))


def config(tmp_path, **overrides) -> env.Config:
    return dataclasses.replace(env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path),
                                         "CAMPAIGN_EXPRESS__SECRET_KEY": SECRET.decode()}),
                               **overrides)


async def started_service(tmp_path, *campaigns: CampaignEntry, store: MemoryStore | None = None,
                          **settings) -> BidderService:
    """A started bidder serving ``campaigns`` (the broad ones when none), on ``store`` (a
    fresh MemoryStore when None), with ``settings`` replacing fields of its config."""
    service = BidderService(config=config(tmp_path, **settings), bus=InProcessBus(),
                            store=store or MemoryStore())
    await service.start()
    service.install(snapshot(*(campaigns or broad_campaigns())))
    return service


class FailsOnce(MemoryStore):
    """A store whose next run of `script` fails: before it runs (``ran=False``), or after
    it ran with its reply lost (``ran=True``, a reply timeout)."""

    def fail(self, script: Script, *, ran: bool) -> None:
        self.failing = (script, ran)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[int]) -> int:
        failing = getattr(self, "failing", None)
        if failing is None or failing[0] is not script:
            return await super().run(script, keys, args)
        self.failing = None
        if failing[1]:
            await super().run(script, keys, args)
        raise StoreUnavailable("redis: timed out")


def client(service: BidderService, client_address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=BidderApp(service), client=(client_address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://bidder.test")
