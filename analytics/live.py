"""Live figures for the live view: the analytics event stream folded into one-second windows.

The live view must not poll a database, so it reads the same stream the ClickHouse sink
stores: every batch published on `analytics.events` also reaches a core subscription here.
`LiveWindow` is the arithmetic (pure, so tests assert exact figures); `LiveFeed` subscribes
one web process to the stream and hands a `Snapshot` to a broadcast callable every second.

Windows close by arrival time, not by event timestamp: a producer's clock or its batching
delay then never shifts a figure into a second that was already shown. Events with a
`campaign_id` count for that campaign; every event counts for the platform row, except
spend, which is only summed per campaign (campaigns bill in different currencies).

Django-free, like the event schema: the consumer in `analytics.consumers` adds access rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypedDict

import msgspec

from analytics.events import Event, EventType, decode_batch
from campaign_express.backends.bus import Bus, Message, Subscription

logger = logging.getLogger(__name__)

SUBJECT = "analytics.events"
# Seconds summed for win rate, spend rate and no-bid reasons: one second alone is too noisy.
WINDOW_SECONDS = 60
SECONDS_PER_DAY = 86_400


class FiguresDict(TypedDict):
    requests: int
    bids: int
    wins: int
    spend_micros: int
    no_bids: dict[str, int]


class RowSnapshot(TypedDict):
    last: FiguresDict  # the second that just closed: the "per second" figures
    window: FiguresDict  # the last `window_seconds` seconds, that one included
    win_rate: float | None  # percent of window bids won; None before any bid


class Snapshot(TypedDict):
    second: int  # Unix time at which the last second closed
    window_seconds: int  # seconds in `window` (fewer than WINDOW_SECONDS right after start)
    platform: RowSnapshot
    campaigns: dict[str, RowSnapshot]  # only campaigns with an event in the window


@dataclass
class Figures:
    requests: int = 0
    bids: int = 0
    wins: int = 0
    spend_micros: int = 0
    no_bids: Counter[str] = field(default_factory=Counter)

    def add(self, other: Figures, *, sign: int = 1) -> None:
        self.requests += sign * other.requests
        self.bids += sign * other.bids
        self.wins += sign * other.wins
        self.spend_micros += sign * other.spend_micros
        for reason, count in other.no_bids.items():
            self.no_bids[reason] += sign * count
        self.no_bids = +self.no_bids  # drops reasons that fell to zero

    def is_empty(self) -> bool:
        return not (self.requests or self.bids or self.wins or self.spend_micros
                    or self.no_bids)

    def as_dict(self) -> FiguresDict:
        return {"requests": self.requests, "bids": self.bids, "wins": self.wins,
                "spend_micros": self.spend_micros, "no_bids": dict(sorted(self.no_bids.items()))}


PLATFORM = ""  # the key of the platform row among the campaign ids


def _fold(figures: dict[str, Figures], event: Event) -> None:
    keys = [PLATFORM, event.campaign_id] if event.campaign_id else [PLATFORM]
    for key in keys:
        row = figures.setdefault(key, Figures())
        if event.event_type is EventType.BID_REQUEST:
            row.requests += 1  # its reason is counted from the request's no_bid event
        elif event.event_type is EventType.NO_BID:
            row.no_bids[event.reason or "unknown"] += 1
        elif event.event_type is EventType.BID:
            row.bids += 1
        elif event.event_type is EventType.WIN:
            row.wins += 1
        elif event.event_type is EventType.BILLING and key != PLATFORM:
            row.spend_micros += event.price_micros


def win_rate(*, wins: int, bids: int) -> float | None:
    """Percent, one decimal. Wins may exceed bids in a window (a win for an older bid)."""
    return None if bids == 0 else round(wins * 100 / bids, 1)


def pace_percent(*, spend_micros: int, seconds: int, daily_budget_micros: int) -> int | None:
    """Spend rate over `seconds` against the even-pacing rate (the daily budget over a day):
    100 spends exactly the daily budget in a day at this rate; None without a budget."""
    if seconds <= 0 or daily_budget_micros <= 0:
        return None
    return spend_micros * SECONDS_PER_DAY * 100 // (seconds * daily_budget_micros)


class LiveWindow:
    """The current second being filled and the last `WINDOW_SECONDS` closed seconds.

    Window totals are kept running (add the closed second, subtract the one that falls out),
    so closing a second costs the number of active campaigns, not that times the window.
    """

    def __init__(self, *, window_seconds: int = WINDOW_SECONDS) -> None:
        self._current: dict[str, Figures] = {}
        self._history: deque[dict[str, Figures]] = deque()
        self._totals: dict[str, Figures] = {}
        self._window_seconds = window_seconds

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            _fold(self._current, event)

    def close(self, *, second: int) -> Snapshot:
        closed, self._current = self._current, {}
        self._history.append(closed)
        for key, figures in closed.items():
            self._totals.setdefault(key, Figures()).add(figures)
        if len(self._history) > self._window_seconds:
            for key, figures in self._history.popleft().items():
                total = self._totals[key]
                total.add(figures, sign=-1)
                if total.is_empty() and key != PLATFORM:
                    del self._totals[key]
        return {
            "second": second,
            "window_seconds": len(self._history),
            "platform": self._row(PLATFORM, closed),
            "campaigns": {key: self._row(key, closed)
                          for key in sorted(self._totals, key=_campaign_order)
                          if key != PLATFORM},
        }

    def _row(self, key: str, closed: dict[str, Figures]) -> RowSnapshot:
        window = self._totals.get(key, Figures())
        return {"last": closed.get(key, Figures()).as_dict(), "window": window.as_dict(),
                "win_rate": win_rate(wins=window.wins, bids=window.bids)}


def _campaign_order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (0, key)


Broadcast = Callable[[Snapshot], Awaitable[None]]


class LiveFeed:
    """One process's subscription to the stream and its once-a-second broadcast.

    A core subscription without a queue group: every web process sees every event, and
    broadcasts to its own consumers only, so nobody receives a snapshot twice. `owns_bus`
    says whether `stop` closes the bus (a NATS connection of its own) or leaves it open (the
    in-process bus that embedded mode shares with the bidder).
    """

    def __init__(self, *, bus: Bus, broadcast: Broadcast, owns_bus: bool,
                 interval: float = 1.0, window: LiveWindow | None = None) -> None:
        self.window = window or LiveWindow()
        self._bus = bus
        self._broadcast = broadcast
        self._owns_bus = owns_bus
        self._interval = interval
        self._subscription: Subscription | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._bus.connect()
        self._subscription = await self._bus.subscribe(SUBJECT, self._receive)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        if self._owns_bus:
            await self._bus.close()

    async def _receive(self, message: Message) -> None:
        try:
            events = decode_batch(message.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            logger.warning("live view skipped an unreadable analytics batch: %s", error)
            return
        self.window.add(events)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            # Sleep to the next boundary of the start time, so the ticks do not drift.
            await asyncio.sleep(self._interval - (loop.time() - started) % self._interval)
            snapshot = self.window.close(second=int(time.time()))
            try:
                await self._broadcast(snapshot)
            except Exception:  # a channel-layer blip must not end the feed
                logger.exception("live view broadcast failed")
