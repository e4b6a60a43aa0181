"""The producer half of the analytics pipeline: a bounded buffer and its publisher.

Producers (the bid path, notices) call `EventBuffer.emit`, which never blocks and never
fails: when the buffer is full (the bus is down long enough to fill it) the event is
counted in `analytics_dropped_total` and the caller goes on serving. A `Publisher` task
drains the buffer in batches — many events per message — onto the JetStream stream
`ANALYTICS` (subject `analytics.events`); an event that cannot be encoded is logged, counted
as dropped and left out of its batch, and the publisher goes on. Each batch gets one
message id, and a failed publish is retried with the same id and payload, so a publish whose
confirmation was lost is stored once (JetStream's duplicate window) and the events keep
their `event_id`s for ClickHouse's deduplication.

Django-free: the bidder runs it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Sequence

import msgspec
from prometheus_client import Counter

from analytics.events import Event, encode_batch
from campaign_express.backends.bus import Bus, BusUnavailable

logger = logging.getLogger(__name__)

SUBJECT = "analytics.events"
STREAM = "ANALYTICS"
# A replayed batch within this window is refused by JetStream itself; after it, ClickHouse's
# ReplacingMergeTree still collapses the rows by event_id.
DUPLICATE_WINDOW_SECONDS = 120.0
# NATS refuses messages over its max_payload (1 MiB by default); batches are split below it.
MAX_MESSAGE_BYTES = 900_000

QUEUED = Counter("analytics_queued_total", "Analytics events accepted into the buffer.")
FLUSHED = Counter("analytics_flushed_total", "Analytics events stored in the stream.")
DROPPED = Counter("analytics_dropped_total",
                  "Analytics events dropped because the buffer was full or they could not be "
                  "encoded.")
# What encoding an event may raise: msgspec's own error, or Python's on an int too large to
# write (ValueError past the digit limit) and the like.
_ENCODE_ERRORS = (msgspec.EncodeError, OverflowError, TypeError, ValueError)
FLUSH_ERRORS = Counter("analytics_flush_errors_total",
                       "Failed attempts to move a batch on, by stage.", ["stage"])


class EventBuffer:
    """A bounded FIFO of events; safe to emit into from any thread (deque operations are
    atomic), drained by one publisher."""

    def __init__(self, *, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._events: collections.deque[Event] = collections.deque()

    def __len__(self) -> int:
        return len(self._events)

    def emit(self, event: Event) -> None:
        if len(self._events) >= self.capacity:
            DROPPED.inc()
            return
        self._events.append(event)
        QUEUED.inc()

    def drain(self, limit: int) -> list[Event]:
        taken: list[Event] = []
        while len(taken) < limit:
            try:
                taken.append(self._events.popleft())
            except IndexError:
                break
        return taken


def split_payloads(events: Sequence[Event]) -> list[tuple[bytes, int]]:
    """Encoded batches with their event counts, each under MAX_MESSAGE_BYTES (a lone
    oversized event still goes as it is). When the batch does not encode, the events that do
    not encode alone are logged, counted as dropped and left out."""
    try:
        payload = encode_batch(events)
    except _ENCODE_ERRORS:
        encodable = [event for event in events if _encodes(event)]
        if len(encodable) == len(events):  # each encodes alone: send them so
            return [(encode_batch([event]), 1) for event in events]
        return split_payloads(encodable) if encodable else []
    if len(payload) <= MAX_MESSAGE_BYTES or len(events) == 1:
        return [(payload, len(events))]
    middle = len(events) // 2
    return split_payloads(events[:middle]) + split_payloads(events[middle:])


def _encodes(event: Event) -> bool:
    try:
        encode_batch([event])
    except _ENCODE_ERRORS as error:
        DROPPED.inc()
        logger.error("analytics event %s (%s) dropped, it cannot be encoded: %.200s",
                     event.event_id, event.event_type, error)
        return False
    return True


class Publisher:
    """Moves batches from a buffer to the stream: at once when `batch_size` events wait,
    else every `interval` seconds. While the bus is down the batch in hand is retried with
    backoff and the buffer absorbs new events up to its capacity."""

    def __init__(self, *, buffer: EventBuffer, bus: Bus, batch_size: int = 1_000,
                 interval: float = 0.2, max_backoff: float = 5.0, stream: str = STREAM,
                 subject: str = SUBJECT) -> None:
        self.buffer = buffer
        self.stream = stream
        self.subject = subject
        self.bus = bus
        self.batch_size = batch_size
        self.interval = interval
        self.max_backoff = max_backoff
        self._pending: list[tuple[str, bytes, int]] = []  # (message id, payload, events)
        self._is_stream_ready = False
        self._task: asyncio.Task[None] | None = None

    async def publish_pending(self) -> bool:
        """Publish the batches in hand, then take the next ones; False if the bus failed."""
        while True:
            if not self._pending:
                events = self.buffer.drain(self.batch_size)
                if not events:
                    return True
                self._pending = [(uuid.uuid4().hex, payload, count)
                                 for payload, count in split_payloads(events)]
                if not self._pending:
                    continue
            try:
                if not self._is_stream_ready:
                    await self.bus.stream_ensure(self.stream, (self.subject,),
                                                 duplicate_window=DUPLICATE_WINDOW_SECONDS)
                    self._is_stream_ready = True
                while self._pending:
                    message_id, payload, count = self._pending[0]
                    await self.bus.stream_publish(self.subject, payload, msg_id=message_id)
                    self._pending.pop(0)
                    FLUSHED.inc(count)
            except BusUnavailable as error:
                FLUSH_ERRORS.labels(stage="publish").inc()
                logger.warning("analytics publish failed, will retry: %s", error)
                return False

    async def run(self) -> None:
        backoff = self.interval
        while True:
            if await self.publish_pending():
                backoff = self.interval
                if len(self.buffer) < self.batch_size:
                    await asyncio.sleep(self.interval)
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self, *, timeout: float = 5.0) -> None:
        """Stop the loop, then try once more to publish what is left (bounded by `timeout`)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(self.publish_pending(), timeout)
        except TimeoutError:
            logger.warning("analytics: %d events left unpublished at stop", len(self.buffer))
