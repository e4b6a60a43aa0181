"""The `Bus` contract, run against InProcessBus and a real NATS server with JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import nats
import pytest

from campaign_express.backends.bus import (
    Bus,
    BusTimeout,
    BusUnavailable,
    InProcessBus,
    Message,
    bus_from_url,
)
from campaign_express.backends.nats_bus import NatsBus


@dataclass
class BusUnderTest:
    bus: Bus
    make_bus: Callable[[], Bus]
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex}")
    buckets: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)

    def subject(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def bucket(self, name: str) -> str:
        bucket = f"{self.prefix}_{name}"
        self.buckets.append(bucket)
        return bucket

    async def stream(self, name: str) -> tuple[str, str]:
        """A fresh stream and the one subject it captures."""
        stream = f"{self.prefix}_{name}"
        self.streams.append(stream)
        subject = self.subject(name)
        await self.bus.stream_ensure(stream, (subject,), duplicate_window=60)
        return stream, subject


@pytest.fixture(params=["in-process", pytest.param("nats", marks=pytest.mark.nats)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[BusUnderTest]:
    if request.param == "in-process":
        under_test = BusUnderTest(bus=InProcessBus(), make_bus=InProcessBus)
        await under_test.bus.connect()
        yield under_test
        await under_test.bus.close()
        return
    url = request.getfixturevalue("nats_url")
    under_test = BusUnderTest(bus=NatsBus(url), make_bus=lambda: NatsBus(url))
    await under_test.bus.connect()
    yield under_test
    await under_test.bus.close()
    cleaner = await nats.connect(url)
    for bucket in under_test.buckets:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await cleaner.jetstream().delete_key_value(bucket)
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await cleaner.jetstream().delete_object_store(bucket)
    for stream in under_test.streams:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await cleaner.jetstream().delete_stream(stream)
    await cleaner.close()


class Inbox:
    """Collects what a handler received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def subjects(self) -> list[str]:
        return sorted(message.subject for message in self.messages)

    @property
    def payloads(self) -> list[bytes]:
        return [message.data for message in self.messages]


async def settle(bus: Bus, condition: Callable[[], bool]) -> None:
    """Wait until `condition` holds, then long enough for a stray extra delivery to show."""
    await bus.ping()
    for _ in range(500):
        if condition():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_subscriber_receives_subject_data_and_headers(backend: BusUnderTest) -> None:
    inbox = Inbox()
    await backend.bus.subscribe(backend.subject("events"), inbox)

    await backend.bus.publish(
        backend.subject("events"), b"batch-1", headers={"Nats-Msg-Id": "batch-1"}
    )
    await backend.bus.publish(backend.subject("events"), b"batch-2")
    await settle(backend.bus, lambda: len(inbox.messages) == 2)

    first, second = inbox.messages
    assert (first.subject, first.data, dict(first.headers), first.reply) == (
        backend.subject("events"),
        b"batch-1",
        {"Nats-Msg-Id": "batch-1"},
        "",
    )
    assert (second.data, dict(second.headers)) == (b"batch-2", {})


async def test_wildcards_match_one_token_or_the_trailing_rest(backend: BusUnderTest) -> None:
    purchases, everything, one_level = Inbox(), Inbox(), Inbox()
    await backend.bus.subscribe(backend.subject("ingest.*.purchase"), purchases)
    await backend.bus.subscribe(backend.subject("ingest.>"), everything)
    await backend.bus.subscribe(backend.subject("ingest.*"), one_level)

    for name in ("ingest.mobile.purchase", "ingest.pos.visit", "ingest.web", "ingest", "other"):
        await backend.bus.publish(backend.subject(name), b"{}")
    await settle(
        backend.bus,
        lambda: (
            (len(purchases.messages), len(everything.messages), len(one_level.messages))
            == (1, 3, 1)
        ),
    )

    assert purchases.subjects == [backend.subject("ingest.mobile.purchase")]
    assert everything.subjects == [
        backend.subject("ingest.mobile.purchase"),
        backend.subject("ingest.pos.visit"),
        backend.subject("ingest.web"),
    ]
    assert one_level.subjects == [backend.subject("ingest.web")]


async def test_queue_group_delivers_each_message_to_exactly_one_member(
    backend: BusUnderTest,
) -> None:
    first_agent, second_agent, observer = Inbox(), Inbox(), Inbox()
    subject = backend.subject("bid-requests")
    await backend.bus.subscribe(subject, first_agent, queue="bid-agents")
    await backend.bus.subscribe(subject, second_agent, queue="bid-agents")
    await backend.bus.subscribe(subject, observer)

    for number in range(100):
        await backend.bus.publish(subject, str(number).encode())
    await settle(
        backend.bus,
        lambda: (
            len(first_agent.messages) + len(second_agent.messages) == 100
            and len(observer.messages) == 100
        ),
    )

    delivered = sorted(int(data) for data in first_agent.payloads + second_agent.payloads)
    assert delivered == list(range(100))
    assert len(first_agent.messages) > 0
    assert len(second_agent.messages) > 0
    assert len(observer.messages) == 100


async def test_unsubscribe_stops_delivery(backend: BusUnderTest) -> None:
    inbox = Inbox()
    subscription = await backend.bus.subscribe(backend.subject("config"), inbox)
    await backend.bus.publish(backend.subject("config"), b"v1")
    await settle(backend.bus, lambda: len(inbox.messages) == 1)

    await subscription.unsubscribe()
    await backend.bus.publish(backend.subject("config"), b"v2")
    await settle(backend.bus, lambda: True)

    assert inbox.payloads == [b"v1"]


async def test_a_failing_handler_keeps_its_subscription(backend: BusUnderTest) -> None:
    received: list[bytes] = []

    async def handler(message: Message) -> None:
        received.append(message.data)
        if message.data == b"bad":
            raise RuntimeError("handler bug")

    await backend.bus.subscribe(backend.subject("fragile"), handler)
    await backend.bus.publish(backend.subject("fragile"), b"bad")
    await backend.bus.publish(backend.subject("fragile"), b"good")
    await settle(backend.bus, lambda: len(received) == 2)

    assert received == [b"bad", b"good"]


async def test_request_returns_the_responders_answer(backend: BusUnderTest) -> None:
    async def agent(message: Message) -> None:
        await message.respond(b"bid for " + message.data)

    await backend.bus.subscribe(backend.subject("bid-requests"), agent, queue="bid-agents")

    answer = await backend.bus.request(backend.subject("bid-requests"), b"req-1", timeout=2)

    assert answer == b"bid for req-1"


async def test_request_message_carries_headers_both_ways(backend: BusUnderTest) -> None:
    async def agent(message: Message) -> None:
        await message.respond(b"answer", headers={"status": message.headers["exchange"]})

    await backend.bus.subscribe(backend.subject("with-headers"), agent, queue="bid-agents")

    reply = await backend.bus.request_message(
        backend.subject("with-headers"), b"req", headers={"exchange": "204"}, timeout=2
    )

    assert (reply.data, reply.headers["status"]) == (b"answer", "204")


async def test_request_without_responders_raises_bus_timeout(backend: BusUnderTest) -> None:
    with pytest.raises(BusTimeout, match="no responders"):
        await backend.bus.request(backend.subject("nobody"), b"req", timeout=2)


async def test_request_unanswered_in_time_raises_bus_timeout(backend: BusUnderTest) -> None:
    seen = Inbox()
    await backend.bus.subscribe(backend.subject("silent"), seen)

    with pytest.raises(BusTimeout):
        await backend.bus.request(backend.subject("silent"), b"req", timeout=0.2)

    assert seen.payloads == [b"req"]


async def test_respond_without_reply_subject_raises(backend: BusUnderTest) -> None:
    inbox = Inbox()
    await backend.bus.subscribe(backend.subject("plain"), inbox)
    await backend.bus.publish(backend.subject("plain"), b"x")
    await settle(backend.bus, lambda: len(inbox.messages) == 1)

    with pytest.raises(ValueError, match="has no reply subject"):
        await inbox.messages[0].respond(b"answer")


async def test_kv_revisions_increase_and_the_latest_value_wins(backend: BusUnderTest) -> None:
    bucket = backend.bucket("config")

    first = await backend.bus.kv_put(bucket, "snapshot", b"v1")
    second = await backend.bus.kv_put(bucket, "snapshot", b"v2")
    other_key = await backend.bus.kv_put(bucket, "model.active", b"m1")

    assert first < second < other_key
    assert await backend.bus.kv_get(bucket, "snapshot") == b"v2"
    assert await backend.bus.kv_get(bucket, "model.active") == b"m1"


async def test_kv_get_of_a_missing_key_or_bucket_is_none(backend: BusUnderTest) -> None:
    bucket = backend.bucket("models")
    await backend.bus.kv_put(bucket, "present", b"yes")

    assert await backend.bus.kv_get(bucket, "absent") is None
    assert await backend.bus.kv_get(backend.bucket("never-written"), "present") is None


async def test_kv_values_survive_a_new_connection(backend: BusUnderTest) -> None:
    bucket = backend.bucket("shared")
    await backend.bus.kv_put(bucket, "snapshot", b"v7")

    if isinstance(backend.bus, InProcessBus):
        reader = backend.bus
    else:
        reader = backend.make_bus()
        await reader.connect()

    assert await reader.kv_get(bucket, "snapshot") == b"v7"
    if reader is not backend.bus:
        await reader.close()


async def test_object_store_keeps_files_bigger_than_a_message(backend: BusUnderTest) -> None:
    bucket = backend.bucket("models")
    model = bytes(range(256)) * 8192  # 2 MiB: JetStream splits it into chunks

    await backend.bus.object_put(bucket, "offer-scoring/3", model)
    await backend.bus.object_put(bucket, "offer-scoring/4", b"newer")

    assert await backend.bus.object_get(bucket, "offer-scoring/3") == model
    assert await backend.bus.object_get(bucket, "offer-scoring/4") == b"newer"
    assert await backend.bus.object_get(bucket, "offer-scoring/5") is None


async def test_invalid_subjects_and_names_are_rejected(backend: BusUnderTest) -> None:
    with pytest.raises(ValueError, match="invalid subject 'a.\\*'"):
        await backend.bus.publish("a.*", b"")
    with pytest.raises(ValueError, match="invalid subject pattern 'a.>.b'"):
        await backend.bus.subscribe("a.>.b", Inbox())
    with pytest.raises(ValueError, match="invalid subject pattern 'a..b'"):
        await backend.bus.subscribe("a..b", Inbox())
    with pytest.raises(ValueError, match="invalid key-value bucket name 'a.b'"):
        await backend.bus.kv_put("a.b", "key", b"")


async def test_a_bus_not_connected_or_closed_is_unavailable(backend: BusUnderTest) -> None:
    bus = backend.make_bus()

    with pytest.raises(BusUnavailable):
        await bus.publish(backend.subject("early"), b"")
    await bus.connect()
    await bus.ping()
    await bus.close()
    with pytest.raises(BusUnavailable):
        await bus.ping()


async def test_nats_bus_without_a_server_raises_bus_unavailable() -> None:
    bus = NatsBus(f"nats://127.0.0.1:{unused_port()}", connect_timeout=1)

    with pytest.raises(BusUnavailable):
        await bus.connect()
    with pytest.raises(BusUnavailable):
        await bus.ping()


def test_bus_from_url_chooses_the_implementation_by_scheme() -> None:
    assert type(bus_from_url("")) is InProcessBus
    assert type(bus_from_url("nats://127.0.0.1:4222")) is NatsBus

    with pytest.raises(ValueError) as raised:
        bus_from_url("amqp://127.0.0.1")
    assert str(raised.value) == "unsupported bus URL scheme 'amqp': use nats:// or tls://"


async def test_in_process_bus_accepts_publishes_from_another_thread() -> None:
    bus = InProcessBus()
    await bus.connect()
    inbox = Inbox()
    await bus.subscribe("config.snapshot", inbox)

    await asyncio.to_thread(asyncio.run, bus.publish("config.snapshot", b"v3"))
    await settle(bus, lambda: len(inbox.messages) == 1)

    assert inbox.payloads == [b"v3"]
    await bus.close()


async def test_stream_fetch_returns_published_messages_in_order(backend: BusUnderTest) -> None:
    stream, subject = await backend.stream("events")

    for number in range(5):
        payload = f"m{number}".encode()
        assert await backend.bus.stream_publish(subject, payload, msg_id=f"id{number}")
    first = await backend.bus.stream_fetch(stream, "sink", batch=3, timeout=1)
    second = await backend.bus.stream_fetch(stream, "sink", batch=10, timeout=1)

    assert [message.data for message in first] == [b"m0", b"m1", b"m2"]
    assert [message.data for message in second] == [b"m3", b"m4"]
    assert [message.deliveries for message in first + second] == [1] * 5
    assert {message.subject for message in first + second} == {subject}


async def test_stream_publish_with_a_repeated_msg_id_is_stored_once(backend: BusUnderTest) -> None:
    stream, subject = await backend.stream("dedup")

    assert await backend.bus.stream_publish(subject, b"batch", msg_id="batch-1") is True
    assert await backend.bus.stream_publish(subject, b"batch", msg_id="batch-1") is False
    fetched = await backend.bus.stream_fetch(stream, "sink", batch=10, timeout=1)

    assert [message.data for message in fetched] == [b"batch"]


async def test_unacked_messages_are_delivered_again_and_acked_ones_never(
    backend: BusUnderTest,
) -> None:
    stream, subject = await backend.stream("redeliver")
    for number in range(3):
        await backend.bus.stream_publish(subject, f"m{number}".encode(), msg_id=f"id{number}")

    first = await backend.bus.stream_fetch(stream, "sink", batch=3, timeout=1, ack_wait=1)
    await first[0].ack()
    await first[1].nak()
    # m2 is neither acked nor nak'ed: it comes back after ack_wait.
    await asyncio.sleep(1.3)
    again = await backend.bus.stream_fetch(stream, "sink", batch=10, timeout=1, ack_wait=1)
    for message in again:
        await message.ack()
    after_acks = await backend.bus.stream_fetch(stream, "sink", batch=10, timeout=0.5)

    assert sorted(message.data for message in again) == [b"m1", b"m2"]
    assert all(message.deliveries == 2 for message in again)
    assert after_acks == []
    assert await backend.bus.stream_pending(stream, "sink") == 0


async def test_stream_pending_counts_what_the_consumer_has_not_acked(backend: BusUnderTest) -> None:
    stream, subject = await backend.stream("lag")
    for number in range(4):
        await backend.bus.stream_publish(subject, b"x", msg_id=f"id{number}")
    fetched = await backend.bus.stream_fetch(stream, "sink", batch=1, timeout=1)
    await fetched[0].ack()

    assert await backend.bus.stream_pending(stream, "sink") == 3


async def test_stream_fetch_waits_for_a_message_published_meanwhile(backend: BusUnderTest) -> None:
    stream, subject = await backend.stream("wait")
    await backend.bus.stream_fetch(stream, "sink", batch=1, timeout=0.1)  # consumer exists

    async def publish_later() -> None:
        await asyncio.sleep(0.2)
        await backend.bus.stream_publish(subject, b"late", msg_id="late")

    publisher = asyncio.create_task(publish_later())
    fetched = await backend.bus.stream_fetch(stream, "sink", batch=5, timeout=3)
    await publisher

    assert [message.data for message in fetched] == [b"late"]


async def test_stream_publish_also_reaches_ordinary_subscribers(backend: BusUnderTest) -> None:
    _, subject = await backend.stream("fanout")
    inbox = Inbox()
    await backend.bus.subscribe(subject, inbox)

    await backend.bus.stream_publish(subject, b"batch", msg_id="b1")
    await settle(backend.bus, lambda: len(inbox.messages) == 1)

    assert inbox.payloads == [b"batch"]


async def test_stream_publish_without_a_stream_is_unavailable(backend: BusUnderTest) -> None:
    with pytest.raises(BusUnavailable):
        await backend.bus.stream_publish(backend.subject("nowhere"), b"x", msg_id="x")
