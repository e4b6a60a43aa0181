"""The live view's websocket: one process-wide feed, each socket filtered to what its user may see.

The feed (`analytics.live.LiveFeed`) starts with the first socket of the process and
broadcasts to a channel-layer group named for this process only: with the Redis channel
layer and several web processes, each process serves its own sockets from its own
subscription to the stream, so nobody gets a snapshot twice. A socket loads its user's
campaigns (names, budgets) once, on connect; after that nothing here touches the database.
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from analytics.live import LiveFeed, RowSnapshot, Snapshot, pace_percent
from campaign_express.platform import process_bus
from campaigns.models import Campaign
from campaigns.selectors import campaign_list, user_sees_all_advertisers

_feed: LiveFeed | None = None
_feed_group = ""
_feed_start: asyncio.Task[str] | None = None


async def live_feed_group() -> str:
    """The group this process broadcasts to; starts the feed on the first call.

    Guarded by one start task per process: sockets connecting at once await the same start.
    A start on another event loop (each test has its own) is replaced, not reused.
    """
    global _feed_start
    loop = asyncio.get_running_loop()
    if _feed_start is None or _feed_start.get_loop() is not loop or (_feed_start.done() and (
            _feed_start.cancelled() or _feed_start.exception() is not None)):
        _feed_start = loop.create_task(_feed_run())
    return await asyncio.shield(_feed_start)


async def _feed_run() -> str:
    global _feed, _feed_group
    group = f"analytics.live.{uuid.uuid4().hex}"
    layer = get_channel_layer()

    async def broadcast(snapshot: Snapshot) -> None:
        await layer.group_send(group, {"type": "live.snapshot", "snapshot": snapshot})

    feed = LiveFeed(bus=process_bus(), broadcast=broadcast, owns_bus=bool(settings.NATS_URL))
    await feed.start()
    _feed, _feed_group = feed, group
    return group


async def live_feed_stop() -> None:
    """Stop this process's feed (at shutdown; tests between event loops)."""
    global _feed, _feed_start
    feed, _feed, _feed_start = _feed, None, None
    if feed is not None:
        await feed.stop()


def _micros(amount: Decimal) -> int:
    return int(amount * 1_000_000)


def live_campaigns(*, user: AbstractBaseUser) -> tuple[bool, dict[str, dict[str, Any]]]:
    """Whether the user sees every advertiser, and the campaigns they may see, by id."""
    rows = campaign_list(user=user).exclude(status=Campaign.Status.ARCHIVED).values_list(
        "id", "name", "advertiser__name", "status", "currency", "daily_budget", "pacing")
    campaigns = {
        str(pk): {"name": name, "advertiser": advertiser, "status": status,
                  "currency": currency, "daily_budget_micros": _micros(daily_budget),
                  "pacing": pacing}
        for pk, name, advertiser, status, currency, daily_budget, pacing in rows}
    return user_sees_all_advertisers(user=user), campaigns


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Sends `campaigns` once, then a `snapshot` every second until the socket closes."""

    group = ""
    sees_all = False
    campaigns: dict[str, dict[str, Any]]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            await self.close()
            return
        if not await database_sync_to_async(user.has_perm)("campaigns.view_campaign"):
            await self.close()
            return
        self.sees_all, self.campaigns = await database_sync_to_async(live_campaigns)(
            user=user)
        self.group = await live_feed_group()
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "campaigns", "campaigns": self.campaigns,
                              "platform": self.sees_all})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def live_snapshot(self, message: dict[str, Any]) -> None:
        snapshot: Snapshot = message["snapshot"]
        campaigns: dict[str, dict[str, Any]] = {}
        for campaign_id, row in snapshot["campaigns"].items():
            meta = self.campaigns.get(campaign_id)
            if meta is None and not self.sees_all:
                continue
            campaigns[campaign_id] = self._with_pace(row, snapshot["window_seconds"], meta)
        out: dict[str, Any] = {"type": "snapshot", "second": snapshot["second"],
                               "window_seconds": snapshot["window_seconds"],
                               "campaigns": campaigns}
        if self.sees_all:
            out["platform"] = snapshot["platform"]
        await self.send_json(out)

    @staticmethod
    def _with_pace(row: RowSnapshot, seconds: int,
                   meta: dict[str, Any] | None) -> dict[str, Any]:
        budget = meta["daily_budget_micros"] if meta else 0
        return {**row, "pace": pace_percent(spend_micros=row["window"]["spend_micros"],
                                            seconds=seconds, daily_budget_micros=budget)}
