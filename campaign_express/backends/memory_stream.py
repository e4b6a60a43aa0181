"""Embedded mode's JetStream stand-in: a durable-consumer stream kept in this process.

It gives `InProcessBus` the semantics the analytics pipeline relies on, so the same
publisher and sink code run in a demo and in production: publishes carry a message id and a
repeat within the duplicate window is stored once; a durable consumer fetches in batches and
a message not acked within `ack_wait` (or nak'ed) is delivered again. Nothing survives the
process. The stream is bounded (`max_messages`, oldest dropped first, as a JetStream stream
with limits), so a consumer that stops cannot grow the process without bound.

Thread-safe: Django's sync code publishes from other threads; a waiting fetch is woken on
its own event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class _Stored:
    sequence: int
    subject: str
    data: bytes
    headers: Mapping[str, str]


@dataclass
class _Consumer:
    next_sequence: int = 1
    # sequence -> (redelivery deadline on the monotonic clock, deliveries so far)
    unacked: dict[int, tuple[float, int]] = field(default_factory=dict)


class MemoryStream:
    def __init__(
        self,
        *,
        subjects: tuple[str, ...],
        duplicate_window: float,
        max_messages: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.subjects = subjects
        self._duplicate_window = duplicate_window
        self._max_messages = max_messages
        self._clock = clock
        self._messages: dict[int, _Stored] = {}
        self._last_sequence = 0
        self._message_ids: dict[str, tuple[int, float]] = {}
        self._consumers: dict[str, _Consumer] = {}
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    def append(self, subject: str, data: bytes, headers: Mapping[str, str], msg_id: str) -> bool:
        """Store a message; False when `msg_id` was already stored within the window."""
        now = self._clock()
        with self._lock:
            self._message_ids = {
                key: (sequence, stored_at)
                for key, (sequence, stored_at) in self._message_ids.items()
                if now - stored_at < self._duplicate_window
            }
            if msg_id in self._message_ids:
                return False
            self._last_sequence += 1
            self._messages[self._last_sequence] = _Stored(
                self._last_sequence, subject, bytes(data), dict(headers)
            )
            self._message_ids[msg_id] = (self._last_sequence, now)
            while len(self._messages) > self._max_messages:
                del self._messages[next(iter(self._messages))]
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_wake, waiter)
        return True

    def _take(self, consumer_name: str, batch: int, ack_wait: float) -> list[tuple[_Stored, int]]:
        now = self._clock()
        with self._lock:
            consumer = self._consumers.setdefault(consumer_name, _Consumer())
            taken: list[tuple[_Stored, int]] = []
            for sequence, (deadline, deliveries) in sorted(consumer.unacked.items()):
                if len(taken) == batch:
                    break
                stored = self._messages.get(sequence)
                if stored is None:
                    del consumer.unacked[sequence]
                elif deadline <= now:
                    consumer.unacked[sequence] = (now + ack_wait, deliveries + 1)
                    taken.append((stored, deliveries + 1))
            while len(taken) < batch and consumer.next_sequence <= self._last_sequence:
                stored_or_none = self._messages.get(consumer.next_sequence)
                consumer.next_sequence += 1
                if stored_or_none is not None:
                    consumer.unacked[stored_or_none.sequence] = (now + ack_wait, 1)
                    taken.append((stored_or_none, 1))
            return taken

    async def fetch(
        self, consumer_name: str, *, batch: int, timeout: float, ack_wait: float
    ) -> list[tuple[_Stored, int]]:
        """Up to `batch` messages (redeliveries first); waits up to `timeout` for the first."""
        deadline = self._clock() + timeout
        while True:
            taken = self._take(consumer_name, batch, ack_wait)
            remaining = deadline - self._clock()
            if taken or remaining <= 0:
                return taken
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            with self._lock:
                self._waiters.append((loop, waiter))
            # Also wakes for redeliveries: at most every 50 ms checks expired acks.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), min(remaining, 0.05))

    def settle(self, consumer_name: str, sequence: int, *, is_done: bool) -> None:
        """Ack (`is_done`) removes the message from the consumer; nak makes it due now."""
        with self._lock:
            consumer = self._consumers.setdefault(consumer_name, _Consumer())
            if sequence not in consumer.unacked:
                return
            if is_done:
                del consumer.unacked[sequence]
                self._trim()
            else:
                consumer.unacked[sequence] = (0.0, consumer.unacked[sequence][1])

    def pending(self, consumer_name: str) -> int:
        """Messages the consumer has not acked yet: not delivered plus awaiting ack."""
        with self._lock:
            consumer = self._consumers.setdefault(consumer_name, _Consumer())
            undelivered = sum(
                1 for sequence in self._messages if sequence >= consumer.next_sequence
            )
            return undelivered + len(consumer.unacked)

    def _trim(self) -> None:
        """Drop messages every consumer has acked (the stream's work-queue-like retention)."""
        floors = [
            min(consumer.unacked, default=consumer.next_sequence)
            for consumer in self._consumers.values()
        ]
        floor = min(floors, default=0)
        while self._messages and next(iter(self._messages)) < floor:
            del self._messages[next(iter(self._messages))]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
