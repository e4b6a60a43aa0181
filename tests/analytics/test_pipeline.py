"""The analytics pipeline end to end: buffer → publisher → stream → sink → ClickHouse.

Run on the embedded pair (in-process bus, chDB) and the production pair (NATS JetStream,
ClickHouse 18.16), each with its own stream and database. The outage test runs a private
ClickHouse server and stops it under a steady flow of events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import nats
import pytest
from prometheus_client import REGISTRY

from analytics.clickhouse import AnalyticsBackend, ChdbBackend, ClickHouseBackend
from analytics.events import Event, EventType, encode_batch
from analytics.migrate import migrations_apply
from analytics.pipeline import EventBuffer, Publisher
from analytics.sink import Sink
from campaign_express.backends.bus import Bus, InProcessBus
from campaign_express.backends.nats_bus import NatsBus
from tests.campaign_express.platform import private_clickhouse


@dataclass
class Pipeline:
    bus: Bus
    backend: AnalyticsBackend
    stream: str
    subject: str

    def publisher(self, buffer: EventBuffer, **options: float) -> Publisher:
        return Publisher(buffer=buffer, bus=self.bus, stream=self.stream, subject=self.subject,
                         **options)  # type: ignore[arg-type]

    def sink(self, **options: float) -> Sink:
        return Sink(bus=self.bus, backend=self.backend, stream=self.stream,
                    subject=self.subject, dead_letter_stream=f"{self.stream}_DL",
                    dead_letter_subject=f"{self.subject}.dead-letter",
                    **options)  # type: ignore[arg-type]

    def stored(self) -> list[tuple[str, str, int]]:
        return [(str(row[0]), row[1], row[2]) for row in self.backend.query(
            "SELECT toString(event_id), request_id, price_micros "
            "FROM analytics_events FINAL ORDER BY request_id")]


def _names() -> tuple[str, str]:
    token = uuid.uuid4().hex[:12]
    return f"TEST_ANALYTICS_{token}", f"test.{token}.analytics.events"


@pytest.fixture(params=["embedded", pytest.param("production", marks=[pytest.mark.nats,
                                                                       pytest.mark.clickhouse])])
async def pipeline(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Pipeline]:
    stream, subject = _names()
    database = f"test_{uuid.uuid4().hex}"
    if request.param == "embedded":
        bus: Bus = InProcessBus()
        backend: AnalyticsBackend = ChdbBackend(tmp_path / "chdb", database=database)
    else:
        bus = NatsBus(request.getfixturevalue("nats_url"))
        url = urlsplit(request.getfixturevalue("clickhouse_url"))._replace(path=f"/{database}")
        backend = ClickHouseBackend(url.geturl())
    await bus.connect()
    migrations_apply(backend=backend, retention_days=90)
    yield Pipeline(bus=bus, backend=backend, stream=stream, subject=subject)
    await bus.close()
    if isinstance(backend, ClickHouseBackend):
        backend.execute(f"DROP DATABASE IF EXISTS {database}")
        cleaner = await nats.connect(request.getfixturevalue("nats_url"))
        for name in (stream, f"{stream}_DL"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await cleaner.jetstream().delete_stream(name)
        await cleaner.close()
    backend.close()


def _event(number: int, **fields: object) -> Event:
    return Event(event_type=EventType.BID, node="test-node", request_id=f"r{number:05d}",
                 campaign_id="7", price_micros=1_250_000 + number, currency="USD",
                 **fields)  # type: ignore[arg-type]


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _until(condition: object, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_published_events_arrive_once_with_their_fields(pipeline: Pipeline) -> None:
    buffer = EventBuffer(capacity=1_000)
    publisher = pipeline.publisher(buffer, batch_size=40)
    events = [_event(number) for number in range(100)]
    for event in events:
        buffer.emit(event)
    flushed_before = _metric("analytics_flushed_total")

    assert await publisher.publish_pending() is True
    inserted = await pipeline.sink(batch_rows=10_000, interval=0.5).flush_once()

    assert _metric("analytics_flushed_total") - flushed_before == 100
    assert inserted == 100
    assert pipeline.stored() == [(str(event.event_id), event.request_id, event.price_micros)
                                 for event in events]
    row = pipeline.backend.query(
        "SELECT event_type, node, campaign_id, currency, schema_version "
        "FROM analytics_events FINAL WHERE request_id = 'r00003'")
    assert row == [("bid", "test-node", "7", "USD", 1)]


async def test_a_replayed_batch_counts_once(pipeline: Pipeline) -> None:
    events = [_event(number) for number in range(10)]
    await pipeline.bus.stream_ensure(pipeline.stream, (pipeline.subject,))
    # The same events twice under different message ids: JetStream keeps both, as after a
    # producer restart; ClickHouse must still count each event once.
    await pipeline.bus.stream_publish(pipeline.subject, encode_batch(events), msg_id="first")
    await pipeline.bus.stream_publish(pipeline.subject, encode_batch(events), msg_id="again")

    inserted = await pipeline.sink(interval=0.5).flush_once()

    assert inserted == 20
    assert len(pipeline.stored()) == 10
    assert pipeline.backend.query(
        "SELECT count(), uniqExact(event_id) FROM analytics_events FINAL") == [(10, 10)]


async def test_a_malformed_message_is_parked_and_the_rest_inserted(pipeline: Pipeline) -> None:
    sink = pipeline.sink(interval=0.5)
    await pipeline.bus.stream_ensure(pipeline.stream, (pipeline.subject,))
    await pipeline.bus.stream_publish(pipeline.subject, encode_batch([_event(1)]), msg_id="a")
    await pipeline.bus.stream_publish(pipeline.subject, b'[{"event_type": "teleport"}]',
                                      msg_id="b")
    await pipeline.bus.stream_publish(pipeline.subject, encode_batch([_event(2)]), msg_id="c")
    parked_before = _metric("analytics_sink_dead_lettered_total", reason="ValidationError")

    inserted = await sink.flush_once()
    parked = await pipeline.bus.stream_fetch(f"{pipeline.stream}_DL", "inspect", batch=10,
                                             timeout=1)

    assert inserted == 2
    assert [row[1] for row in pipeline.stored()] == ["r00001", "r00002"]
    assert [message.data for message in parked] == [b'[{"event_type": "teleport"}]']
    assert "teleport" in parked[0].headers["Analytics-Error"]
    assert _metric("analytics_sink_dead_lettered_total", reason="ValidationError") \
        - parked_before == 1
    assert await pipeline.bus.stream_pending(pipeline.stream, sink.consumer) == 0


async def test_a_full_buffer_counts_drops_and_keeps_accepting_calls() -> None:
    buffer = EventBuffer(capacity=3)
    dropped_before = _metric("analytics_dropped_total")

    for number in range(5):
        buffer.emit(_event(number))

    assert len(buffer) == 3
    assert _metric("analytics_dropped_total") - dropped_before == 2
    assert [event.request_id for event in buffer.drain(10)] == ["r00000", "r00001", "r00002"]


async def test_a_batch_that_failed_to_publish_is_retried_with_the_same_message_id() -> None:
    stream, subject = _names()
    bus = InProcessBus()
    buffer = EventBuffer()
    publisher = Publisher(buffer=buffer, bus=bus, stream=stream, subject=subject)
    buffer.emit(_event(1))
    errors_before = _metric("analytics_flush_errors_total", stage="publish")

    assert await publisher.publish_pending() is False  # the bus is not connected
    await bus.connect()
    await bus.stream_ensure(stream, (subject,))
    # The first attempt's confirmation "was lost": the same batch is already stored.
    message_id = publisher._pending[0][0]
    await bus.stream_publish(subject, publisher._pending[0][1], msg_id=message_id)
    assert await publisher.publish_pending() is True
    stored = await bus.stream_fetch(stream, "sink", batch=10, timeout=0.2)

    assert _metric("analytics_flush_errors_total", stage="publish") - errors_before == 1
    assert len(stored) == 1
    await bus.close()


async def test_an_event_that_cannot_be_encoded_is_dropped_and_the_rest_published() -> None:
    stream, subject = _names()
    bus = InProcessBus()
    await bus.connect()
    buffer = EventBuffer()
    publisher = Publisher(buffer=buffer, bus=bus, stream=stream, subject=subject)
    # More digits than Python writes out: what a conversion value of 1e5000 made.
    unencodable = msgspec.structs.replace(_event(2), price_micros=10**5000)
    for event in (_event(1), unencodable, _event(3)):
        buffer.emit(event)
    dropped_before = _metric("analytics_dropped_total")

    published = await publisher.publish_pending()
    buffer.emit(_event(4))
    published_after = await publisher.publish_pending()
    stored = await bus.stream_fetch(stream, "sink", batch=10, timeout=0.2)

    assert (published, published_after) == (True, True)
    assert _metric("analytics_dropped_total") - dropped_before == 1
    assert [[event["request_id"] for event in json.loads(message.data)]
            for message in stored] == [["r00001", "r00003"], ["r00004"]]
    await bus.close()


@pytest.mark.nats
@pytest.mark.clickhouse
async def test_events_wait_in_jetstream_while_clickhouse_is_down_and_arrive_once(
    nats_url: str, tmp_path: Path
) -> None:
    stream, subject = _names()
    bus = NatsBus(nats_url)
    await bus.connect()
    with private_clickhouse(tmp_path) as server:
        backend = ClickHouseBackend(server.url, connect_timeout=1, timeout=5)
        migrations_apply(backend=backend, retention_days=90)
        buffer = EventBuffer()
        publisher = Publisher(buffer=buffer, bus=bus, stream=stream, subject=subject,
                              batch_size=50, interval=0.05)
        sink = Sink(bus=bus, backend=backend, stream=stream, subject=subject,
                    dead_letter_stream=f"{stream}_DL", dead_letter_subject=f"{subject}.dl",
                    batch_rows=200, interval=0.2, ack_wait=5, max_backoff=0.5)
        stop = asyncio.Event()
        publisher.start()
        sink_task = asyncio.create_task(sink.run(stop))
        sent: list[Event] = []

        async def flow(seconds: float) -> None:
            for _ in range(int(seconds / 0.02)):
                event = _event(len(sent))
                sent.append(event)
                buffer.emit(event)
                await asyncio.sleep(0.02)

        def stored_count() -> int:
            return int(backend.query("SELECT count() FROM analytics_events FINAL")[0][0])

        await flow(1.5)
        await _until(lambda: stored_count() > 0)
        server.stop()
        insert_errors_before = _metric("analytics_flush_errors_total", stage="insert")
        await flow(3.0)  # ClickHouse is down: events go on into JetStream
        assert _metric("analytics_flush_errors_total", stage="insert") > insert_errors_before
        server.start()
        await flow(1.5)
        await _until(lambda: stored_count() == len(sent), seconds=60)
        stop.set()
        await sink_task
        await publisher.stop()

        rows = backend.query(
            "SELECT count(), uniqExact(event_id), sum(price_micros) FROM analytics_events FINAL")
        assert rows == [(len(sent), len(sent), sum(event.price_micros for event in sent))]
        backend.close()
    await bus.close()
    cleaner = await nats.connect(nats_url)
    for name in (stream, f"{stream}_DL"):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await cleaner.jetstream().delete_stream(name)
    await cleaner.close()
