"""Analytics pipeline throughput: the sink's sustained events/s into ClickHouse, and what
emitting costs a producer. Prints what it measures; nothing is estimated.

    .venv/bin/python benchmarks/analytics_sink.py --nats nats://127.0.0.1:4222 \
        --clickhouse clickhouse://default@127.0.0.1:9000/bench [--events 500000]
    .venv/bin/python benchmarks/analytics_sink.py --chdb [--events 200000]  # embedded pair

1. Producer: building a bid event and `EventBuffer.emit` (what the bid path pays), then the
   publisher's encoding per event (paid on the publisher task, off the request).
2. Sink: `--events` bid-like events are published to a fresh stream in 1,000-event messages
   first, then one `Sink` (default batch 10,000 rows / 1 s) drains them into a fresh
   `analytics_events`; the figure is events inserted per second of wall time, with the
   sink's CPU seconds. The stream and the database are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analytics.clickhouse import AnalyticsBackend, ChdbBackend, ClickHouseBackend  # noqa: E402
from analytics.events import Event, EventType, encode_batch  # noqa: E402
from analytics.migrate import migrations_apply  # noqa: E402
from analytics.pipeline import EventBuffer, Publisher  # noqa: E402
from analytics.sink import INSERTS, Sink  # noqa: E402
from campaign_express.backends.bus import Bus, InProcessBus, bus_from_url  # noqa: E402


def bid_event(number: int) -> Event:
    return Event(event_type=EventType.BID, node="bench", request_id=f"req-{number}",
                 impression_id="1", campaign_id=str(number % 10_000),
                 creative_id=str(number % 20_000), advertiser_id=str(number % 100),
                 offer_id=uuid.uuid4().hex, exchange="demo", price_micros=1_250_000 + number,
                 currency="USD", user_id=f"user-{number % 50_000}",
                 attributes={"media": "banner"})


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def stored_count(backend: AnalyticsBackend, *, final: bool) -> int:
    return int(backend.query("SELECT count() FROM analytics_events"
                             + (" FINAL" if final else ""))[0][0])


def server_cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of the local clickhouse-server and nats-server processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals = {"clickhouse-serv": 0.0, "nats-server": 0.0}  # /proc truncates names to 15
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
        except (OSError, IndexError):
            continue
        if name in totals:
            values = fields[1].split()
            totals[name] += (int(values[11]) + int(values[12])) / ticks
    return totals


def servers_line(before: dict[str, float], elapsed: float) -> str:
    after = server_cpu_seconds()
    return "; ".join(f"{name} {after[name] - before[name]:.2f} s CPU "
                     f"({(after[name] - before[name]) / elapsed:.0%} of a core)"
                     for name in after)


def producer_costs(count: int) -> None:
    buffer = EventBuffer(capacity=count)
    started = time.perf_counter()
    for number in range(count):
        buffer.emit(bid_event(number))
    emit_us = (time.perf_counter() - started) / count * 1e6
    events = buffer.drain(count)
    started = time.perf_counter()
    for start in range(0, count, 1_000):
        encode_batch(events[start:start + 1_000])
    encode_us = (time.perf_counter() - started) / count * 1e6
    print(f"producer: build + emit {emit_us:.2f} µs/event (bid path); "
          f"encode {encode_us:.2f} µs/event (publisher task); {count:,} events")


def sink_process(stream: str, subject: str, nats_url: str, clickhouse_url: str,
                 batch_rows: int, started: Any, results: Any) -> None:
    """One sink process of several sharing the durable consumer: drains until idle."""

    async def drain() -> tuple[int, float]:
        bus = bus_from_url(nats_url)
        await bus.connect()
        backend = ClickHouseBackend(clickhouse_url)
        sink = Sink(bus=bus, backend=backend, stream=stream, subject=subject,
                    dead_letter_stream=f"{stream}_DL", dead_letter_subject=f"{subject}.dl",
                    batch_rows=batch_rows, interval=1.0)
        await sink._ensure_streams()  # connect before the clock starts
        backend.ping()
        started.wait()
        cpu_before, inserted = cpu_seconds(), 0
        while batch := await sink.flush_once():
            inserted += batch
        await bus.close()
        return inserted, cpu_seconds() - cpu_before

    results.put(asyncio.run(drain()))


async def sinks_in_processes(sinks: int, stream: str, subject: str, backend: AnalyticsBackend,
                             count: int, batch_rows: int, nats_url: str,
                             clickhouse_url: str) -> None:
    started, results = multiprocessing.Event(), multiprocessing.Queue()
    processes = [multiprocessing.Process(target=sink_process, args=(
        stream, subject, nats_url, clickhouse_url, batch_rows, started, results))
        for _ in range(sinks)]
    for process in processes:
        process.start()
    time.sleep(3)  # each connects before the clock starts
    servers_before = server_cpu_seconds()
    clock = time.perf_counter()
    started.set()
    while backend.query("SELECT count() FROM analytics_events")[0][0] < count:
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - clock
    outcomes = [results.get() for _ in processes]
    for process in processes:
        process.join()
    stored = backend.query("SELECT count() FROM analytics_events FINAL")[0][0]
    cpu = sum(cpu for _, cpu in outcomes)
    print(f"sink: {sinks} processes, {sum(n for n, _ in outcomes):,} events "
          f"({', '.join(f'{n:,}' for n, _ in outcomes)}), {elapsed:.2f} s wall -> "
          f"{count / elapsed:,.0f} events/s ({cpu / count * 1e6:.1f} µs CPU/event); "
          f"stored (FINAL): {stored:,}")
    print(f"servers meanwhile: {servers_line(servers_before, elapsed)}")


async def sink_throughput(bus: Bus, backend: AnalyticsBackend, count: int, batch_rows: int,
                          sinks: int, nats_url: str, clickhouse_url: str) -> None:
    stream, subject = f"BENCH_{uuid.uuid4().hex[:8]}", f"bench.{uuid.uuid4().hex[:8]}"
    buffer = EventBuffer(capacity=count)
    publisher = Publisher(buffer=buffer, bus=bus, stream=stream, subject=subject)
    started = time.perf_counter()
    for start in range(0, count, 50_000):
        for number in range(start, min(count, start + 50_000)):
            buffer.emit(bid_event(number))
        if not await publisher.publish_pending():
            raise SystemExit("publishing to the bus failed")
    print(f"published {count:,} events in {time.perf_counter() - started:.1f} s")

    if sinks > 1:
        await sinks_in_processes(sinks, stream, subject, backend, count, batch_rows,
                                 nats_url, clickhouse_url)
    else:
        sink = Sink(bus=bus, backend=backend, stream=stream, subject=subject,
                    dead_letter_stream=f"{stream}_DL", dead_letter_subject=f"{subject}.dl",
                    batch_rows=batch_rows, interval=1.0)
        inserts_before = INSERTS._value.get()
        servers_before = server_cpu_seconds()
        stop = asyncio.Event()
        cpu_before, started = cpu_seconds(), time.perf_counter()
        running = asyncio.create_task(sink.run(stop))
        # Its own connection: the sink's client serialises its calls.
        poller = ClickHouseBackend(clickhouse_url) if clickhouse_url else backend
        while await asyncio.to_thread(stored_count, poller, final=False) < count:
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
        stop.set()
        await running
        stored = stored_count(backend, final=True)
        print(f"sink: {count:,} events in {INSERTS._value.get() - inserts_before:.0f} INSERTs, "
              f"{elapsed:.2f} s wall, {cpu:.2f} s CPU -> {count / elapsed:,.0f} events/s "
              f"({cpu / count * 1e6:.1f} µs CPU/event); stored (FINAL): {stored:,}")
        print(f"servers meanwhile: {servers_line(servers_before, elapsed)}")
    if hasattr(bus, "_jetstream"):
        await bus._jetstream().delete_stream(stream)  # type: ignore[attr-defined]
        await bus._jetstream().delete_stream(f"{stream}_DL")  # type: ignore[attr-defined]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--batch-rows", type=int, default=10_000)
    parser.add_argument("--sinks", type=int, default=1,
                        help="sink processes sharing the consumer (server only)")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--clickhouse", default="clickhouse://default@127.0.0.1:9000/bench")
    parser.add_argument("--chdb", action="store_true",
                        help="embedded pair: in-process bus and chDB in a temporary folder")
    arguments = parser.parse_args()

    producer_costs(200_000)
    database = f"bench_{uuid.uuid4().hex[:8]}"
    bus: Bus
    backend: AnalyticsBackend
    url = ""
    if arguments.chdb:
        bus, backend = InProcessBus(), ChdbBackend(Path(tempfile.mkdtemp()) / "chdb",
                                                   database=database)
    else:
        bus = bus_from_url(arguments.nats)
        url = urlsplit(arguments.clickhouse)._replace(path=f"/{database}").geturl()
        backend = ClickHouseBackend(url)
    await bus.connect()
    migrations_apply(backend=backend, retention_days=90)
    print(f"ClickHouse {'.'.join(map(str, backend.server_version()))}"
          f"{' (chDB)' if arguments.chdb else ''}; batch {arguments.batch_rows:,} rows")
    try:
        await sink_throughput(bus, backend, arguments.events, arguments.batch_rows,
                              1 if arguments.chdb else arguments.sinks, arguments.nats,
                              url if not arguments.chdb else "")
    finally:
        backend.execute(f"DROP DATABASE IF EXISTS {database}")
        backend.close()
        await bus.close()


if __name__ == "__main__":
    asyncio.run(main())
