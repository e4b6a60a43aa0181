"""The consumer half of the analytics pipeline: JetStream `ANALYTICS` into ClickHouse.

The sink collects messages from its durable consumer until it holds `batch_rows` events or
`interval` seconds have passed since the first, inserts them with ONE INSERT, and acks the
messages only after ClickHouse accepted it. When the insert fails (ClickHouse down or
refusing) it naks the messages and backs off: they stay in JetStream and come back, so
nothing is lost while ClickHouse is away. If the sink dies between insert and ack, the batch
is delivered and inserted again; `analytics_events` is a ReplacingMergeTree ending its sort
key in `event_id`, so reports reading it with FINAL count each event once.

A message that is not a valid batch (bad JSON, an unknown event type) would fail every
retry, so it is parked on `analytics.dead-letter` (stream `ANALYTICS_DEAD_LETTER`, kept for
inspection and replay) and acked; the rest of its batch goes on.

Django-free: `manage.py analytics_sink` and the embedded platform run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import msgspec
from prometheus_client import Counter, Gauge

from analytics.clickhouse import AnalyticsBackend, AnalyticsError
from analytics.events import COLUMNS, Event, decode_batch, to_columns
from analytics.pipeline import DUPLICATE_WINDOW_SECONDS, FLUSH_ERRORS, STREAM, SUBJECT
from campaign_express.backends.bus import Bus, BusUnavailable, StreamMessage

logger = logging.getLogger(__name__)

CONSUMER = "analytics-sink"
TABLE = "analytics_events"
DEAD_LETTER_STREAM = "ANALYTICS_DEAD_LETTER"
DEAD_LETTER_SUBJECT = "analytics.dead-letter"
# Messages asked for per fetch; each holds up to a publisher's batch (1,000 events).
FETCH_MESSAGES = 100

INSERTED = Counter("analytics_sink_inserted_total", "Events inserted into ClickHouse.")
INSERTS = Counter("analytics_sink_inserts_total", "INSERT statements (batches) that succeeded.")
DEAD_LETTERED = Counter("analytics_sink_dead_lettered_total",
                        "Stream messages parked on the dead-letter subject, by reason.",
                        ["reason"])
LAG = Gauge("analytics_sink_lag_messages",
            "Messages in the ANALYTICS stream the sink has not acked yet.")
LAG_SECONDS = Gauge("analytics_sink_lag_seconds",
                    "Age of the oldest event in the last inserted batch.")


class Sink:
    def __init__(self, *, bus: Bus, backend: AnalyticsBackend, batch_rows: int = 10_000,
                 interval: float = 1.0, ack_wait: float = 60.0, max_backoff: float = 10.0,
                 consumer: str = CONSUMER, stream: str = STREAM, subject: str = SUBJECT,
                 dead_letter_stream: str = DEAD_LETTER_STREAM,
                 dead_letter_subject: str = DEAD_LETTER_SUBJECT) -> None:
        if ack_wait <= interval:
            raise ValueError("ack_wait must exceed the batch interval")
        self.bus = bus
        self.backend = backend
        self.batch_rows = batch_rows
        self.interval = interval
        self.ack_wait = ack_wait
        self.max_backoff = max_backoff
        self.consumer = consumer
        self.stream = stream
        self.subject = subject
        self.dead_letter_stream = dead_letter_stream
        self.dead_letter_subject = dead_letter_subject
        self._is_ready = False
        self._rows_per_message = 1_000  # a publisher's batch, until messages say otherwise

    async def _ensure_streams(self) -> None:
        if not self._is_ready:
            await self.bus.stream_ensure(self.stream, (self.subject,),
                                         duplicate_window=DUPLICATE_WINDOW_SECONDS)
            await self.bus.stream_ensure(self.dead_letter_stream, (self.dead_letter_subject,))
            self._is_ready = True

    async def _collect(self) -> list[tuple[StreamMessage, list[Event]]]:
        """Messages with their events, until `batch_rows` events or `interval` seconds."""
        collected: list[tuple[StreamMessage, list[Event]]] = []
        rows = 0
        deadline: float | None = None
        while rows < self.batch_rows:
            now = time.monotonic()
            timeout = self.interval if deadline is None else deadline - now
            if timeout <= 0:
                break
            # Ask for about as many messages as the batch still has room for.
            wanted = (self.batch_rows - rows) // self._rows_per_message + 1
            messages = await self.bus.stream_fetch(self.stream, self.consumer,
                                                   batch=min(FETCH_MESSAGES, wanted),
                                                   timeout=timeout, ack_wait=self.ack_wait)
            if not messages:
                if deadline is None:
                    return collected  # an idle interval: nothing to insert
                continue
            deadline = deadline or now + self.interval
            for message in messages:
                events = await self._events(message)
                if events is not None:
                    collected.append((message, events))
                    rows += len(events)
                    self._rows_per_message = max(1, len(events))
        return collected

    async def _events(self, message: StreamMessage) -> list[Event] | None:
        try:
            return decode_batch(message.data)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as error:
            reason = type(error).__name__
            logger.error("analytics: parked message %d on %s: %s", message.sequence,
                         self.dead_letter_subject, error)
            await self.bus.stream_publish(
                self.dead_letter_subject, message.data,
                msg_id=f"{self.stream}-{message.sequence}",
                headers={"Analytics-Error": str(error)[:500], "Analytics-Sequence":
                         str(message.sequence)})
            await message.ack()
            DEAD_LETTERED.labels(reason=reason).inc()
            return None

    async def flush_once(self) -> int:
        """One batch: collect, insert, ack. Returns the events inserted.

        Raises `AnalyticsError` or `BusUnavailable` after nak'ing what it held.
        """
        await self._ensure_streams()
        return await self._insert(await self._collect())

    async def _insert(self, collected: list[tuple[StreamMessage, list[Event]]]) -> int:
        """One INSERT for the collected messages' events, then their acks."""
        events = [event for _, message_events in collected for event in message_events]
        try:
            if events:
                await asyncio.to_thread(self.backend.insert_columns, TABLE, COLUMNS,
                                        to_columns(events))
        except AnalyticsError:
            FLUSH_ERRORS.labels(stage="insert").inc()
            await _nak_quietly([message for message, _ in collected])
            raise
        for message, _ in collected:
            await message.ack()
        if events:
            INSERTED.inc(len(events))
            INSERTS.inc()
            oldest = min(event.timestamp for event in events)
            LAG_SECONDS.set(max(0.0, time.time() - oldest.timestamp()))
        return len(events)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Flush until `stop` is set, backing off while ClickHouse or the bus is away.

        The next batch is collected while the last one is being inserted (at most one
        INSERT in flight), so fetching and decoding overlap ClickHouse's work; each batch
        is still acked only after its own INSERT succeeded.
        """
        stop = stop or asyncio.Event()
        backoff = 0.5
        last_lag_check = 0.0
        inserting: asyncio.Task[int] | None = None
        while not stop.is_set():
            collected: list[tuple[StreamMessage, list[Event]]] = []
            try:
                await self._ensure_streams()
                collected = await self._collect()
                if inserting is not None:
                    previous, inserting = inserting, None
                    await previous
                if collected:
                    inserting = asyncio.create_task(self._insert(collected))
                    collected = []
                backoff = 0.5
                if time.monotonic() - last_lag_check >= 5:
                    LAG.set(await self.bus.stream_pending(self.stream, self.consumer))
                    last_lag_check = time.monotonic()
            except (AnalyticsError, BusUnavailable) as error:
                await _nak_quietly([message for message, _ in collected])
                logger.warning("analytics sink: %s; retrying in %.1f s", error, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self.max_backoff)
        if inserting is not None:
            with contextlib.suppress(AnalyticsError, BusUnavailable):
                await inserting


async def _nak_quietly(messages: Sequence[StreamMessage]) -> None:
    """Nak what we can; a message we cannot reach comes back after ack_wait anyway."""
    for message in messages:
        try:
            await message.nak()
        except BusUnavailable:
            return
