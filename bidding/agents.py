"""Bid agents: at most N bids at once, the rest waiting in one bounded queue that every
transport feeds.

HTTP, gRPC and NATS all call `AgentPool.submit`, so `CAMPAIGN_EXPRESS__AGENTS_PER_NODE` bounds
how many bids a node works on at once, whatever they arrived by, and the queue bounds how many
wait. An agent is a slot, not a task of its own: a request that finds one free bids at once in
the task that brought it (handing it to a worker task would cost two task switches and a
future per request), and one that finds none waits its turn in the queue. When the queue is
full, `submit` answers at once with a no-bid (`NoBid.OVERLOADED`, nbr 1 "technical error"): an
exchange gets a fast "no" instead of a request that would wait past its `tmax`. Making the
queue unbounded would turn a traffic spike into a timeout for every request behind it;
making it small sheds bursts a node could have absorbed.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, Protocol

import msgspec

from bidding import metrics
from bidding.handler import Answer, BidHandler
from bidding.nbr import NoBid
from bidding.snapshot import ExchangeEntry

logger = logging.getLogger(__name__)

# A short queue: past it a request gets an immediate no-bid. Measured at 1,000 requests/s
# offered to one saturated process, 50 per agent let answers queue to 1.8 s (p99), long past
# any tmax; 2 per agent sheds a quarter of them and answers the rest within 110 ms.
QUEUE_PER_AGENT = 2


class Handles(Protocol):
    """What an agent runs for each request: `BidHandler`, or a wrapper around it."""

    async def handle(self, body: bytes, *, exchange: ExchangeEntry,
                     received_at: float | None = None) -> Answer: ...


class _RequestId(msgspec.Struct):
    id: str


_REQUEST_ID = msgspec.json.Decoder(_RequestId)


class TurnedAway(Protocol):
    """Told of each request answered without bidding (`BidEvents.no_bid`)."""

    def __call__(self, *, request_id: str, exchange: ExchangeEntry, reason: NoBid) -> None: ...


def turned_away(body: bytes, exchange: ExchangeEntry, reason: NoBid,
                observer: TurnedAway | None = None) -> Answer:
    """A no-bid given without bidding: only the request's `id` is read, for the nbr body.

    A body whose id cannot be read gets a plain 204: shedding must stay cheaper than bidding,
    so it does not validate the request.
    """
    try:
        request_id = _REQUEST_ID.decode(body).id
    except (msgspec.DecodeError, RecursionError):
        request_id = ""
    if observer is not None:
        observer(request_id=request_id, exchange=exchange, reason=reason)
    if not request_id:
        metrics.no_bids(reason.value).inc()
        metrics.responses(exchange.slug, "no_bid").inc()
        return Answer(204, b"", reason)
    return BidHandler.no_bid(exchange, request_id, reason)


class AgentPool:
    """`agents` slots for bidding and a queue of `queue_size` (default agents × 2) waiting
    for one, in the event loop that serves the transports.

    `stop` turns new requests away, lets what bids and waits finish for up to
    `drain_seconds`, then answers whatever is left with a technical-error no-bid (those still
    bidding are cancelled), so no caller waits forever. Each request answered without bidding
    is told to `on_turned_away` (the bidder makes it a `no_bid` analytics event).
    """

    def __init__(self, handler: Handles, *, agents: int, queue_size: int | None = None,
                 drain_seconds: float = 1.0, on_turned_away: TurnedAway | None = None) -> None:
        if agents < 1:
            raise ValueError(f"an agent pool needs at least one agent, got {agents}")
        self.handler = handler
        self.agents = agents
        self.queue_size = queue_size if queue_size is not None else agents * QUEUE_PER_AGENT
        if self.queue_size < 1:
            raise ValueError(f"the agent queue needs room for one request, got {queue_size}")
        self.drain_seconds = drain_seconds
        self.on_turned_away = on_turned_away
        self._running = False
        self._taken = 0  # slots bidding, or handed to a waiting request about to bid
        self._bidding: set[asyncio.Task[Any]] = set()
        self._waiting: deque[asyncio.Future[bool]] = deque()  # True: a slot is yours
        self._cut: set[asyncio.Task[Any]] = set()  # cancelled by `stop`: answered, not raised

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def depth(self) -> int:
        """Requests waiting for an agent (not those bidding)."""
        return len(self._waiting)

    async def start(self) -> None:
        self._running = True
        metrics.AGENT_QUEUE_DEPTH.set(0)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_seconds
        while (self._taken or self._waiting) and loop.time() < deadline:
            await asyncio.sleep(0.005)
        if self._taken or self._waiting:
            logger.warning("bid agents stopped with %d requests queued", len(self._waiting))
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(False)
        for task in self._bidding:
            self._cut.add(task)
            task.cancel()
        metrics.AGENT_QUEUE_DEPTH.set(0)

    async def submit(self, body: bytes, *, exchange: ExchangeEntry,
                     received_at: float | None = None) -> Answer:
        """The answer, or at once a no-bid when the queue is full or the pool stopped."""
        if not self._running:
            return self._turned_away(body, exchange, NoBid.TECHNICAL_ERROR)
        received_at = received_at or time.perf_counter()
        if self._taken < self.agents:
            self._taken += 1
        elif len(self._waiting) >= self.queue_size:
            metrics.SHED.inc()
            return self._turned_away(body, exchange, NoBid.OVERLOADED)
        elif not await self._turn():
            return self._turned_away(body, exchange, NoBid.TECHNICAL_ERROR)
        task = asyncio.current_task()
        assert task is not None
        self._bidding.add(task)
        try:
            return await self.handler.handle(body, exchange=exchange, received_at=received_at)
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            task.uncancel()
            return self._turned_away(body, exchange, NoBid.TECHNICAL_ERROR)
        except Exception:  # noqa: BLE001 - a bug must cost one no-bid, not an agent
            logger.exception("bid agent failed on a request")
            return self._turned_away(body, exchange, NoBid.TECHNICAL_ERROR)
        finally:
            self._bidding.discard(task)
            self._cut.discard(task)
            self._pass_on()

    async def _turn(self) -> bool:
        """Wait in the queue until a slot is handed over (True) or the pool stops (False)."""
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        metrics.AGENT_QUEUE_DEPTH.set(len(self._waiting))
        try:
            return await turn
        except asyncio.CancelledError:  # the caller went away: it is not bid for
            if turn in self._waiting:
                self._waiting.remove(turn)
                metrics.AGENT_QUEUE_DEPTH.set(len(self._waiting))
            elif turn.done() and not turn.cancelled() and turn.result():
                self._pass_on()  # a slot was handed over just before: hand it on
            raise

    def _pass_on(self) -> None:
        """A slot is free: the longest waiting request takes it, else it is given back."""
        while self._waiting:
            turn = self._waiting.popleft()
            metrics.AGENT_QUEUE_DEPTH.set(len(self._waiting))
            if not turn.done():
                turn.set_result(True)
                return
        self._taken -= 1

    def _turned_away(self, body: bytes, exchange: ExchangeEntry, reason: NoBid) -> Answer:
        return turned_away(body, exchange, reason, self.on_turned_away)
