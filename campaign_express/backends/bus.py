"""Message bus: config push, model updates, ingest, bid agents and the analytics stream.

`NatsBus` (in `nats_bus`) is the production implementation (NATS with JetStream);
`InProcessBus` gives one embedded-mode process the same semantics with asyncio alone. Both pass
`tests/backends/test_bus_contract.py`, so code written against `Bus` behaves the same in a
demo and in production: NATS subject wildcards (`*` one token, `>` one or more trailing
tokens), queue groups (each message to exactly one member), request/reply where nobody
answering is a `BusTimeout`, a key-value store whose revisions only increase, and an object
store for files such as model versions (JetStream's object store).

Bid requests travel by core request/reply on `campaign-bids.bid-requests` (queue group
`bid-agents`). This module never creates a stream capturing that subject: a stream would ack
the request itself and the requester would read the ack as the answer. The only streams it
creates are key-value buckets (`KV_<bucket>`, subjects `$KV.<bucket>.>`), object stores
(`OBJ_<bucket>`, subjects `$O.<bucket>.>`) and the streams callers name in `stream_ensure`
(the analytics stream `ANALYTICS` on `analytics.events`). The server may be
NATS 2.9, so nothing here relies on 2.10 features.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

from campaign_express.backends.memory_stream import MemoryStream

logger = logging.getLogger(__name__)

_BUCKET_NAME = re.compile(r"[A-Za-z0-9_-]+")
_KV_KEY = re.compile(r"[-/_=.A-Za-z0-9]+")
_WHITESPACE = re.compile(r"\s")


class BusUnavailable(Exception):
    """The bus cannot be reached (not connected, closed, or the server does not answer)."""


class BusTimeout(Exception):
    """A request got no answer in time, or nobody subscribes to its subject."""


@dataclass
class Message:
    """One delivered message. `reply` is empty unless the sender waits for an answer."""

    subject: str
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    reply: str = ""
    _bus: Bus | None = field(default=None, repr=False, compare=False)

    async def respond(self, data: bytes, *, headers: Mapping[str, str] | None = None) -> None:
        if not self.reply or self._bus is None:
            raise ValueError(f"message on {self.subject!r} has no reply subject")
        await self._bus.publish(self.reply, data, headers=headers)


Handler = Callable[[Message], Awaitable[None]]


@dataclass
class StreamMessage:
    """One message fetched from a stream by a durable consumer; ack it once it is handled.

    A message neither acked nor nak'ed within the consumer's `ack_wait` is delivered again
    (`deliveries` counts the attempts), so a consumer that dies mid-batch loses nothing.
    """

    subject: str
    data: bytes
    headers: Mapping[str, str]
    sequence: int
    deliveries: int
    _settle: Callable[[bool], Awaitable[None]] = field(repr=False, compare=False)

    async def ack(self) -> None:
        await self._settle(True)

    async def nak(self) -> None:
        """Deliver again as soon as possible (a transient failure, not a bad message)."""
        await self._settle(False)


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class Bus(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None: ...

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        """Deliver matching messages to `handler`, one at a time per subscription.

        Interest is registered with the server before this returns, so a message published
        afterwards from anywhere reaches the handler. A handler that raises is logged and
        the subscription keeps going.
        """
        ...

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes: ...

    async def request_message(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """`request` with headers both ways: the whole reply, its headers included."""
        ...

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int: ...

    async def kv_get(self, bucket: str, key: str) -> bytes | None: ...

    async def object_put(self, bucket: str, name: str, data: bytes) -> None: ...

    async def object_get(self, bucket: str, name: str) -> bytes | None: ...

    async def stream_ensure(
        self, name: str, subjects: tuple[str, ...], *, duplicate_window: float = 120.0
    ) -> None:
        """Create the stream (file storage) if it does not exist yet; an existing one is kept."""
        ...

    async def stream_publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        """Store `data` in the stream capturing `subject`, once the server confirms it.

        Returns False when `msg_id` was already stored within the duplicate window (a retry
        of a publish whose confirmation was lost). Ordinary subscribers to `subject` receive
        the message too. `BusUnavailable` when no stream confirms it.
        """
        ...

    async def stream_fetch(
        self,
        stream: str,
        consumer: str,
        *,
        batch: int,
        timeout: float,
        ack_wait: float = 30.0,
    ) -> list[StreamMessage]:
        """Up to `batch` messages for the durable `consumer` (created on first use, explicit
        acks); waits at most `timeout` seconds and returns [] when nothing arrived."""
        ...

    async def stream_pending(self, stream: str, consumer: str) -> int:
        """Messages `consumer` has not acked yet: the consumer's lag."""
        ...


def _check_subject(subject: str) -> None:
    """A subject to publish to: dot-separated, non-empty tokens, no wildcards, no spaces."""
    tokens = subject.split(".")
    if _WHITESPACE.search(subject) or any(
        not token or "*" in token or ">" in token for token in tokens
    ):
        raise ValueError(f"invalid subject {subject!r}")


def _check_pattern(pattern: str) -> None:
    """A subject to subscribe to: `*` and `>` only as whole tokens, `>` only last."""
    tokens = pattern.split(".")
    for index, token in enumerate(tokens):
        is_wildcard = token == "*" or (token == ">" and index == len(tokens) - 1)
        if not is_wildcard and (not token or "*" in token or ">" in token):
            raise ValueError(f"invalid subject pattern {pattern!r}")
    if _WHITESPACE.search(pattern):
        raise ValueError(f"invalid subject pattern {pattern!r}")


def _check_queue(queue: str | None) -> None:
    if queue is not None and (not queue or _WHITESPACE.search(queue)):
        raise ValueError(f"invalid queue group {queue!r}")


def _check_kv(bucket: str, key: str) -> None:
    if not _BUCKET_NAME.fullmatch(bucket):
        raise ValueError(f"invalid key-value bucket name {bucket!r}")
    if not _KV_KEY.fullmatch(key) or key.startswith(".") or key.endswith("."):
        raise ValueError(f"invalid key-value key {key!r}")


def _check_stream(name: str, subjects: tuple[str, ...]) -> None:
    """A stream's name (as a bucket's) and the subject patterns it captures."""
    _check_kv(name, "stream")
    for subject in subjects:
        _check_pattern(subject)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS matching: `*` is exactly one token, a final `>` is one or more tokens."""
    pattern_tokens = pattern.split(".")
    subject_tokens = subject.split(".")
    for index, token in enumerate(pattern_tokens):
        if token == ">":
            return len(subject_tokens) > index
        if index >= len(subject_tokens):
            return False
        if token != "*" and token != subject_tokens[index]:
            return False
    return len(subject_tokens) == len(pattern_tokens)


async def _run_handler(handler: Handler, message: Message) -> None:
    try:
        await handler(message)
    except Exception:
        logger.exception("bus handler for %s failed", message.subject)


class _InProcessSubscription:
    def __init__(
        self, *, bus: InProcessBus, pattern: str, handler: Handler, queue: str | None
    ) -> None:
        self.bus = bus
        self.pattern = pattern
        self.queue = queue
        self._handler = handler
        self._pending: asyncio.Queue[Message] = asyncio.Queue()
        self._is_active = True
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._deliver())

    def put(self, message: Message) -> None:
        try:
            running_loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running_loop = None
        if running_loop is self._loop:
            self._pending.put_nowait(message)
        else:
            self._loop.call_soon_threadsafe(self._pending.put_nowait, message)

    async def _deliver(self) -> None:
        while self._is_active:
            message = await self._pending.get()
            await _run_handler(self._handler, message)

    def stop(self) -> None:
        self._is_active = False
        if self._task is not asyncio.current_task():
            self._task.cancel()

    async def unsubscribe(self) -> None:
        self.bus._remove(self)
        self.stop()


class InProcessBus:
    """The bus for embedded mode: every publisher and subscriber lives in this process.

    Each subscription has its own queue and task, so a slow handler delays only its own
    subscription, as with a NATS client. Queue-group members are picked at random, as the
    NATS server does. Nothing survives the process, key-value buckets included.

    Publishing or requesting from another thread or event loop (Django's sync code in
    embedded mode) is safe: each delivery is handed to the subscriber's own loop.
    """

    def __init__(self) -> None:
        self._subscriptions: list[_InProcessSubscription] = []
        self._buckets: dict[str, dict[str, bytes]] = {}
        self._revisions: dict[str, int] = {}
        self._objects: dict[str, dict[str, bytes]] = {}
        self._streams: dict[str, MemoryStream] = {}
        self._is_connected = False

    def _require_connected(self) -> None:
        if not self._is_connected:
            raise BusUnavailable("in-process bus is not connected")

    def _remove(self, subscription: _InProcessSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _deliver(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None, reply: str
    ) -> int:
        """Hand a message to every matching subscription and one member per queue group."""
        groups: dict[str, list[_InProcessSubscription]] = {}
        receivers: list[_InProcessSubscription] = []
        for subscription in list(self._subscriptions):
            if not subject_matches(subscription.pattern, subject):
                continue
            if subscription.queue is None:
                receivers.append(subscription)
            else:
                groups.setdefault(subscription.queue, []).append(subscription)
        receivers.extend(random.choice(members) for members in groups.values())
        for receiver in receivers:
            receiver.put(
                Message(
                    subject=subject,
                    data=bytes(data),
                    headers=dict(headers or {}),
                    reply=reply,
                    _bus=self,
                )
            )
        return len(receivers)

    async def connect(self) -> None:
        self._is_connected = True

    async def close(self) -> None:
        self._is_connected = False
        for subscription in self._subscriptions:
            subscription.stop()
        self._subscriptions.clear()

    async def ping(self) -> None:
        self._require_connected()

    async def publish(
        self, subject: str, data: bytes, *, headers: Mapping[str, str] | None = None
    ) -> None:
        _check_subject(subject)
        self._require_connected()
        self._deliver(subject, data, headers, reply="")

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        _check_pattern(subject)
        _check_queue(queue)
        self._require_connected()
        subscription = _InProcessSubscription(
            bus=self, pattern=subject, handler=handler, queue=queue
        )
        self._subscriptions.append(subscription)
        return subscription

    async def request(self, subject: str, data: bytes, *, timeout: float) -> bytes:
        return (await self.request_message(subject, data, timeout=timeout)).data

    async def request_message(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        _check_subject(subject)
        self._require_connected()
        answer: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def take_answer(message: Message) -> None:
            if not answer.done():
                answer.set_result(message)

        inbox_subject = f"_INBOX.{uuid.uuid4().hex}"
        inbox = await self.subscribe(inbox_subject, take_answer)
        try:
            if self._deliver(subject, data, headers, reply=inbox_subject) == 0:
                raise BusTimeout(f"no responders on {subject!r}")
            return await asyncio.wait_for(answer, timeout)
        except TimeoutError as error:
            raise BusTimeout(f"no answer on {subject!r} within {timeout} s") from error
        finally:
            await inbox.unsubscribe()

    async def kv_put(self, bucket: str, key: str, value: bytes) -> int:
        _check_kv(bucket, key)
        self._require_connected()
        revision = self._revisions.get(bucket, 0) + 1
        self._revisions[bucket] = revision
        self._buckets.setdefault(bucket, {})[key] = bytes(value)
        return revision

    async def kv_get(self, bucket: str, key: str) -> bytes | None:
        _check_kv(bucket, key)
        self._require_connected()
        return self._buckets.get(bucket, {}).get(key)

    async def object_put(self, bucket: str, name: str, data: bytes) -> None:
        _check_kv(bucket, name)
        self._require_connected()
        self._objects.setdefault(bucket, {})[name] = bytes(data)

    async def object_get(self, bucket: str, name: str) -> bytes | None:
        _check_kv(bucket, name)
        self._require_connected()
        return self._objects.get(bucket, {}).get(name)


    async def stream_ensure(
        self, name: str, subjects: tuple[str, ...], *, duplicate_window: float = 120.0
    ) -> None:
        _check_stream(name, subjects)
        self._require_connected()
        self._streams.setdefault(
            name, MemoryStream(subjects=subjects, duplicate_window=duplicate_window)
        )

    async def stream_publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> bool:
        _check_subject(subject)
        self._require_connected()
        for stream in self._streams.values():
            if any(subject_matches(pattern, subject) for pattern in stream.subjects):
                is_new = stream.append(subject, data, dict(headers or {}), msg_id)
                if is_new:
                    self._deliver(subject, data, headers, reply="")
                return is_new
        raise BusUnavailable(f"no stream captures {subject!r}")

    def _stream(self, name: str) -> MemoryStream:
        self._require_connected()
        stream = self._streams.get(name)
        if stream is None:
            raise BusUnavailable(f"stream {name!r} does not exist")
        return stream

    async def stream_fetch(
        self,
        stream: str,
        consumer: str,
        *,
        batch: int,
        timeout: float,
        ack_wait: float = 30.0,
    ) -> list[StreamMessage]:
        memory_stream = self._stream(stream)
        taken = await memory_stream.fetch(consumer, batch=batch, timeout=timeout, ack_wait=ack_wait)

        def settler(sequence: int) -> Callable[[bool], Awaitable[None]]:
            async def settle(is_done: bool) -> None:
                memory_stream.settle(consumer, sequence, is_done=is_done)

            return settle

        return [
            StreamMessage(
                subject=stored.subject,
                data=stored.data,
                headers=stored.headers,
                sequence=stored.sequence,
                deliveries=deliveries,
                _settle=settler(stored.sequence),
            )
            for stored, deliveries in taken
        ]

    async def stream_pending(self, stream: str, consumer: str) -> int:
        return self._stream(stream).pending(consumer)


def bus_from_url(url: str) -> Bus:
    """Empty URL: the in-process bus (embedded mode); `nats://` or `tls://`: NATS."""
    if not url:
        return InProcessBus()
    scheme = urlsplit(url).scheme
    if scheme in ("nats", "tls"):
        from campaign_express.backends.nats_bus import NatsBus  # nats-py only where used

        return NatsBus(url)
    raise ValueError(f"unsupported bus URL scheme {scheme!r}: use nats:// or tls://")
