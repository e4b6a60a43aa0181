"""The live view: per-second figures from the event stream, pushed over a websocket.

The arithmetic is checked on `LiveWindow` directly; the socket tests go through the real
ASGI application (origin check, session auth, URL routing) and publish on the process's bus,
as the bidder does in embedded mode.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from analytics.consumers import live_feed_stop
from analytics.events import Event, EventType, encode_batch
from analytics.live import LiveFeed, LiveWindow, Snapshot, pace_percent, win_rate
from campaign_express.asgi import application
from campaign_express.backends.bus import InProcessBus
from campaign_express.platform import embedded_bus
from campaigns.models import Advertiser, Campaign
from campaigns.roles import MARKETER, OPS
from tests.campaign_express.platform import ROOT


def _event(event_type: EventType, campaign: int | str = "", **fields: Any) -> Event:
    return Event(event_type=event_type, node="bidder-1", campaign_id=str(campaign), **fields)


def _figures(requests: int = 0, bids: int = 0, wins: int = 0, spend_micros: int = 0,
             no_bids: dict[str, int] | None = None) -> dict[str, Any]:
    return {"requests": requests, "bids": bids, "wins": wins, "spend_micros": spend_micros,
            "no_bids": no_bids or {}}


def _traffic(campaign: int | str) -> list[Event]:
    """Four requests (one not bid on), three bids, one win and two billings of one campaign."""
    return [
        _event(EventType.BID_REQUEST), _event(EventType.BID_REQUEST),
        _event(EventType.BID_REQUEST),
        # As the bidder emits a no-bid: the request with its reason, and the no_bid event.
        _event(EventType.BID_REQUEST, reason="no_eligible_campaign"),
        _event(EventType.NO_BID, reason="no_eligible_campaign"),
        _event(EventType.BID, campaign, price_micros=4_000),
        _event(EventType.BID, campaign), _event(EventType.BID, campaign),
        _event(EventType.WIN, campaign, price_micros=2_500),
        _event(EventType.BILLING, campaign, price_micros=2_500),
        _event(EventType.BILLING, campaign, price_micros=1_500),
        _event(EventType.NO_BID, campaign, reason="budget_exhausted"),
        _event(EventType.CLICK, campaign),  # not a live figure
    ]


def test_a_closed_second_holds_exact_per_campaign_and_platform_figures():
    window = LiveWindow()
    window.add(_traffic(7))

    snapshot = window.close(second=1_700_000_000)

    campaign = {"last": _figures(bids=3, wins=1, spend_micros=4_000,
                                 no_bids={"budget_exhausted": 1}),
                "window": _figures(bids=3, wins=1, spend_micros=4_000,
                                   no_bids={"budget_exhausted": 1}),
                "win_rate": 33.3}
    platform_figures = _figures(requests=4, bids=3, wins=1,
                                no_bids={"budget_exhausted": 1, "no_eligible_campaign": 1})
    assert snapshot == {"second": 1_700_000_000, "window_seconds": 1,
                        "platform": {"last": platform_figures, "window": platform_figures,
                                     "win_rate": 33.3},
                        "campaigns": {"7": campaign}}


def test_the_window_sums_closed_seconds_and_forgets_the_oldest():
    window = LiveWindow(window_seconds=2)
    window.add(_traffic(7))
    window.close(second=10)
    window.add([_event(EventType.BID, 7), _event(EventType.BID, 8)])
    second = window.close(second=11)
    third = window.close(second=12)
    fourth = window.close(second=13)

    assert second["window_seconds"] == 2
    assert second["campaigns"]["7"]["last"] == _figures(bids=1)
    assert second["campaigns"]["7"]["window"] == _figures(
        bids=4, wins=1, spend_micros=4_000, no_bids={"budget_exhausted": 1})
    assert second["campaigns"]["8"] == {"last": _figures(bids=1), "window": _figures(bids=1),
                                        "win_rate": 0.0}
    assert third["window_seconds"] == 2
    assert third["campaigns"] == {
        "7": {"last": _figures(), "window": _figures(bids=1), "win_rate": 0.0},
        "8": {"last": _figures(), "window": _figures(bids=1), "win_rate": 0.0}}
    assert third["platform"]["window"] == _figures(bids=2)
    assert fourth["campaigns"] == {}
    assert fourth["platform"] == {"last": _figures(), "window": _figures(), "win_rate": None}


def test_win_rate_and_pace_are_exact():
    assert win_rate(wins=1, bids=3) == 33.3
    assert win_rate(wins=0, bids=0) is None
    # 100 a day is 1157.4 micros a second: spending 4000 micros in 2 s is 172% of even pace.
    assert pace_percent(spend_micros=4_000, seconds=2, daily_budget_micros=100_000_000) == 172
    assert pace_percent(spend_micros=1_157_407, seconds=1_000,
                        daily_budget_micros=100_000_000) == 99
    assert pace_percent(spend_micros=1_000, seconds=0, daily_budget_micros=100) is None
    assert pace_percent(spend_micros=1_000, seconds=60, daily_budget_micros=0) is None


def test_the_live_aggregation_imports_without_django():
    code = ("import sys, analytics.live\n"
            "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


async def test_the_feed_broadcasts_a_snapshot_every_interval_and_skips_unreadable_batches():
    bus = InProcessBus()
    received: list[Snapshot] = []

    async def broadcast(snapshot: Snapshot) -> None:
        received.append(snapshot)

    feed = LiveFeed(bus=bus, broadcast=broadcast, owns_bus=True, interval=0.2)
    await feed.start()
    await bus.publish("analytics.events", b"not json")
    await bus.publish("analytics.events", encode_batch(_traffic(5)))
    for _ in range(50):
        if any("5" in snapshot["campaigns"] for snapshot in received):
            break
        await asyncio.sleep(0.05)
    await feed.stop()

    figures = next(snapshot for snapshot in received if "5" in snapshot["campaigns"])
    assert figures["campaigns"]["5"]["last"] == _figures(
        bids=3, wins=1, spend_micros=4_000, no_bids={"budget_exhausted": 1})
    with pytest.raises(Exception, match="not connected"):
        await bus.publish("analytics.events", b"[]")  # the feed owned the bus and closed it


# --- the websocket, through the real ASGI application ---------------------------------------

ORIGIN = (b"origin", b"http://localhost")


@pytest.fixture
async def feed_stopped() -> AsyncIterator[None]:
    """Each test has its own event loop: the process's feed must not outlive it."""
    yield
    await live_feed_stop()


@pytest.fixture
def accounts(transactional_db: None) -> dict[str, Any]:
    """Two advertisers with one campaign each; a marketer of the first, and an ops user."""
    users = get_user_model().objects
    marketer = users.create_user("live-marketer", password="x", is_staff=True)
    marketer.groups.add(Group.objects.get(name=MARKETER))
    ops = users.create_user("live-ops", password="x", is_staff=True)
    ops.groups.add(Group.objects.get(name=OPS))
    now = timezone.now()
    campaigns = []
    for name in ("Northwind", "Contoso"):
        advertiser = Advertiser.objects.create(name=name, domain=f"{name.lower()}.example")
        if name == "Northwind":
            advertiser.marketers.add(marketer)
        campaigns.append(Campaign.objects.create(
            advertiser=advertiser, name=f"{name} spring", start_at=now - timedelta(days=1),
            end_at=now + timedelta(days=30), total_budget=Decimal(1000),
            daily_budget=Decimal(100), base_bid_cpm=Decimal("2.5"), max_bid_cpm=Decimal(5),
            created_by=marketer))
    return {"marketer": _session_cookie(marketer), "ops": _session_cookie(ops),
            "own": campaigns[0], "other": campaigns[1]}


def _session_cookie(user: Any) -> tuple[bytes, bytes]:
    client = Client()
    client.force_login(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def _connect(*headers: tuple[bytes, bytes]) -> tuple[WebsocketCommunicator, bool]:
    communicator = WebsocketCommunicator(application, "/ws/analytics/live/",
                                         headers=[ORIGIN, *headers])
    connected, _ = await communicator.connect()
    return communicator, connected


async def _snapshot_with(communicator: WebsocketCommunicator, campaign_id: str
                         ) -> dict[str, Any]:
    """The first snapshot that shows `campaign_id`; the feed pushes one every second."""
    async with asyncio.timeout(2.5):
        while True:
            message = await communicator.receive_json_from(timeout=2.5)
            if message["type"] == "snapshot" and campaign_id in message["campaigns"]:
                return message


async def test_a_marketer_gets_exact_live_figures_of_their_own_campaigns_only(
        accounts, feed_stopped):
    own, other = str(accounts["own"].pk), str(accounts["other"].pk)
    communicator, connected = await _connect(accounts["marketer"])
    assert connected
    assert await communicator.receive_json_from(timeout=2) == {
        "type": "campaigns", "platform": False,
        "campaigns": {own: {"name": "Northwind spring", "advertiser": "Northwind",
                            "status": "draft", "currency": "USD",
                            "daily_budget_micros": 100_000_000, "pacing": "even"}}}

    bus = embedded_bus()
    await bus.connect()
    await bus.publish("analytics.events", encode_batch(_traffic(own) + _traffic(other)))
    message = await _snapshot_with(communicator, own)
    await communicator.disconnect()

    seconds = message["window_seconds"]
    assert set(message) == {"type", "second", "window_seconds", "campaigns"}  # no platform row
    assert list(message["campaigns"]) == [own]
    figures = _figures(bids=3, wins=1, spend_micros=4_000, no_bids={"budget_exhausted": 1})
    assert message["campaigns"][own] == {
        "last": figures, "window": figures, "win_rate": 33.3,
        "pace": 4_000 * 86_400 * 100 // (seconds * 100_000_000)}


async def test_ops_gets_every_campaign_and_the_platform_row(accounts, feed_stopped):
    own, other = str(accounts["own"].pk), str(accounts["other"].pk)
    communicator, connected = await _connect(accounts["ops"])
    assert connected
    first = await communicator.receive_json_from(timeout=2)
    assert (first["platform"], sorted(first["campaigns"])) == (True, sorted([own, other]))

    bus = embedded_bus()
    await bus.connect()
    await bus.publish("analytics.events", encode_batch(_traffic(own) + _traffic(other)))
    message = await _snapshot_with(communicator, own)
    await communicator.disconnect()

    assert sorted(message["campaigns"]) == sorted([own, other])
    assert message["platform"]["last"] == _figures(
        requests=8, bids=6, wins=2, no_bids={"budget_exhausted": 2, "no_eligible_campaign": 2})


@pytest.mark.redis
async def test_snapshots_cross_the_redis_channel_layer(accounts, feed_stopped, redis_url,
                                                      settings):
    """Production's channel layer: the same socket test over `channels_redis`."""
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [redis_url], "prefix": f"test-live-{uuid.uuid4().hex}"}}}
    channel_layers.backends.clear()
    own = str(accounts["own"].pk)
    try:
        communicator, connected = await _connect(accounts["marketer"])
        assert connected
        assert (await communicator.receive_json_from(timeout=2))["type"] == "campaigns"
        bus = embedded_bus()
        await bus.connect()
        await bus.publish("analytics.events", encode_batch(_traffic(own)))
        message = await _snapshot_with(communicator, own)
        await communicator.disconnect()
        await live_feed_stop()
        layer = channel_layers["default"]
        assert isinstance(layer, RedisChannelLayer)
        await layer.flush()
        await layer.close_pools()
    finally:
        channel_layers.backends.clear()

    assert message["campaigns"][own]["last"] == _figures(
        bids=3, wins=1, spend_micros=4_000, no_bids={"budget_exhausted": 1})


async def test_an_anonymous_socket_is_closed(accounts, feed_stopped):
    communicator, connected = await _connect()
    assert not connected


async def test_a_socket_from_a_foreign_origin_is_refused(accounts, feed_stopped):
    communicator = WebsocketCommunicator(application, "/ws/analytics/live/",
                                         headers=[(b"origin", b"https://evil.example"),
                                                  accounts["marketer"]])
    connected, _ = await communicator.connect()
    assert not connected


def test_the_live_page_is_in_the_admin_and_linked_from_the_campaign_list(accounts):
    client = Client()
    assert client.get("/admin/analytics/live/").status_code == 302  # to the admin login
    client.force_login(get_user_model().objects.get(username="live-marketer"))

    page = client.get("/admin/analytics/live/")
    campaigns = client.get("/admin/campaigns/campaign/")

    assert page.status_code == 200
    assert b'id="live-campaigns"' in page.content
    assert b"/ws/analytics/live/" in page.content
    assert b'href="/admin/analytics/live/"' in campaigns.content


async def test_the_embedded_router_sends_websockets_to_the_web_side_and_stops_the_feed_first():
    from campaign_express.router import PlatformRouter

    seen: list[str] = []

    async def web(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(f"web {scope['type']}")

    async def bidder(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(f"bidder {scope['type']}")
        if scope["type"] == "lifespan":
            seen.append(f"bidder got {(await receive())['type']}")

    async def on_shutdown() -> None:
        seen.append("feed stopped")

    async def receive() -> dict[str, str]:
        return {"type": "lifespan.shutdown"}

    router = PlatformRouter(web=web, bidder=bidder, on_shutdown=on_shutdown)
    await router({"type": "websocket", "path": "/ws/analytics/live/"}, receive, None)
    await router({"type": "http", "path": "/v1/bid"}, receive, None)
    await router({"type": "lifespan"}, receive, None)

    assert seen == ["web websocket", "bidder http", "bidder lifespan", "feed stopped",
                    "bidder got lifespan.shutdown"]
