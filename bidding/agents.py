"""Bid agents: N workers taking bid requests from one bounded queue that every transport feeds.

HTTP, gRPC and NATS all call `AgentPool.submit`, so `CAMPAIGN_EXPRESS__AGENTS_PER_NODE` bounds
how many bids a node works on at once, whatever they arrived by, and the queue bounds how many
wait. When the queue is full, `submit` answers at once with a no-bid (`NoBid.OVERLOADED`, nbr 1
"technical error"): an exchange gets a fast "no" instead of a request that would wait past its
`tmax`. Making the queue unbounded would turn a traffic spike into a timeout for every request
behind it; making it small sheds bursts a node could have absorbed.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

import msgspec

from bidding import metrics
from bidding.handler import Answer, BidHandler
from bidding.nbr import NoBid
from bidding.snapshot import ExchangeEntry
from campaign_express.logs import REQUEST, RequestContext

logger = logging.getLogger(__name__)

# A short queue: past it a request gets an immediate no-bid. Measured at 1,000 requests/s
# offered to one saturated process, 50 per agent let answers queue to 1.8 s (p99), long past
# any tmax; 2 per agent sheds a quarter of them and answers the rest within 110 ms.
QUEUE_PER_AGENT = 2


class Handles(Protocol):
    """What an agent runs for each request: `BidHandler`, or a wrapper around it."""

    async def handle(self, body: bytes, *, exchange: ExchangeEntry,
                     received_at: float | None = None) -> Answer: ...


@dataclass(slots=True)
class _Work:
    body: bytes
    exchange: ExchangeEntry
    received_at: float
    answer: asyncio.Future[Answer]
    context: RequestContext | None  # the transport's log context, for the agent's lines


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
    """`agents` tasks answering requests from one queue of `queue_size` (default agents × 2).

    `start` and `stop` run in the event loop that serves the transports. `stop` lets the
    agents finish what is queued for up to `drain_seconds`, then answers whatever is left with
    a technical-error no-bid, so no caller waits forever. Each request answered without an
    agent is told to `on_turned_away` (the bidder makes it a `no_bid` analytics event).
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
        self._queue: asyncio.Queue[_Work] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def is_running(self) -> bool:
        return bool(self._tasks)

    @property
    def depth(self) -> int:
        """Requests waiting for an agent (not those an agent is working on)."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        if self._tasks:
            return
        self._queue = asyncio.Queue(self.queue_size)
        self._tasks = [asyncio.create_task(self._run(self._queue), name=f"bid-agent-{number}")
                       for number in range(self.agents)]
        metrics.AGENT_QUEUE_DEPTH.set(0)

    async def stop(self) -> None:
        queue, tasks = self._queue, self._tasks
        self._tasks = []
        if queue is None:
            return
        if tasks:
            try:
                await asyncio.wait_for(queue.join(), self.drain_seconds)
            except TimeoutError:
                logger.warning("bid agents stopped with %d requests queued", queue.qsize())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while not queue.empty():
            work = queue.get_nowait()
            self._settle(work, self._turned_away(work.body, work.exchange,
                                                 NoBid.TECHNICAL_ERROR))
        self._queue = None
        metrics.AGENT_QUEUE_DEPTH.set(0)

    async def submit(self, body: bytes, *, exchange: ExchangeEntry,
                     received_at: float | None = None) -> Answer:
        """The agent's answer, or at once a no-bid when the queue is full or the pool stopped."""
        queue = self._queue
        if queue is None or not self._tasks:
            return self._turned_away(body, exchange, NoBid.TECHNICAL_ERROR)
        work = _Work(body, exchange, received_at or time.perf_counter(),
                     asyncio.get_running_loop().create_future(), REQUEST.get())
        try:
            queue.put_nowait(work)
        except asyncio.QueueFull:
            metrics.SHED.inc()
            return self._turned_away(body, exchange, NoBid.OVERLOADED)
        metrics.AGENT_QUEUE_DEPTH.set(queue.qsize())
        return await work.answer

    async def _run(self, queue: asyncio.Queue[_Work]) -> None:
        while True:
            work = await queue.get()
            metrics.AGENT_QUEUE_DEPTH.set(queue.qsize())
            token = REQUEST.set(work.context)
            try:
                if not work.answer.done():  # a caller that went away is not bid for
                    answer = await self.handler.handle(work.body, exchange=work.exchange,
                                                       received_at=work.received_at)
                    self._settle(work, answer)
            except asyncio.CancelledError:
                self._settle(work, self._turned_away(work.body, work.exchange,
                                                     NoBid.TECHNICAL_ERROR))
                raise
            except Exception:  # noqa: BLE001 - a bug must cost one no-bid, not an agent
                logger.exception("bid agent failed on a request")
                self._settle(work, self._turned_away(work.body, work.exchange,
                                                     NoBid.TECHNICAL_ERROR))
            finally:
                REQUEST.reset(token)
                queue.task_done()

    def _turned_away(self, body: bytes, exchange: ExchangeEntry, reason: NoBid) -> Answer:
        return turned_away(body, exchange, reason, self.on_turned_away)

    @staticmethod
    def _settle(work: _Work, answer: Answer) -> None:
        if not work.answer.done():
            work.answer.set_result(answer)
