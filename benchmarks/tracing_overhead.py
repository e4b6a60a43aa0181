"""What tracing costs the bid path: µs per request through the bidder's ASGI app with tracing
off (no OTLP endpoint), on with every request sampled, and on with 1 % sampled; spans go over
OTLP http/protobuf to a receiver this script runs, which counts what it is sent.

    .venv/bin/python benchmarks/tracing_overhead.py [--requests 3000] [--rounds 6]
        [--campaigns 1000]

Requests go straight into the ASGI app (no HTTP server or client in the measure), one at a
time, against a generated snapshot and the in-process store. The three settings alternate
for `--rounds` rounds; the medians are printed, in CPU time of the whole process (the exporter's
thread included) and in wall time. A bid costs far more than its span, and a shared machine's
noise can hide the difference: so the tracing code is then also measured alone, on a real
request and answer (the span, its attributes, and its export, counted as process CPU until the
exporter has sent it), and so is what every request pays with tracing off: the log context
object, its `ContextVar.set` and reset, and the tracing check.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
import timeit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bidder_load import (  # noqa: E402
    corpus_requests,
    generate_snapshot,
    reference_loop_ms,
    request_bodies,
)
from bidding import snapshot as snapshots  # noqa: E402
from bidding.app import BidderApp, HttpRequestContext  # noqa: E402
from bidding.service import BidderService  # noqa: E402
from campaign_express import env, telemetry  # noqa: E402
from campaign_express.backends.bus import InProcessBus  # noqa: E402
from campaign_express.backends.store import MemoryStore  # noqa: E402
from campaign_express.logs import REQUEST  # noqa: E402


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP receiver: accepts `POST /v1/traces`, counts requests and bytes."""

    counts = {"posts": 0, "bytes": 0}

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        size = int(self.headers["Content-Length"])
        self.rfile.read(size)
        self.counts["posts"] += 1
        self.counts["bytes"] += size
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - its name
        pass


async def _run_requests(app: BidderApp, bodies: list[bytes], count: int,
                        statuses: dict[int, int]) -> None:
    for number in range(count):
        body = bodies[number % len(bodies)]
        scope = {"type": "http", "method": "POST", "path": "/v1/bid", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 40000)}

        async def receive(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] = statuses.get(message["status"], 0) + 1

        await app(scope, receive, send)


async def _measure(app: BidderApp, bodies: list[bytes], count: int) -> tuple[float, float]:
    statuses: dict[int, int] = {}
    cpu, wall = time.process_time(), time.perf_counter()
    await _run_requests(app, bodies, count, statuses)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert statuses.get(200, 0) + statuses.get(204, 0) == count, statuses
    return cpu / count * 1e6, wall / count * 1e6


async def _one_answer(app: BidderApp, bodies: list[bytes]) -> bytes:
    """The body of a bid: a real answer for `_span_cost` to decode."""
    answers: list[bytes] = []
    for body in bodies:
        scope = {"type": "http", "method": "POST", "path": "/v1/bid", "query_string": b"",
                 "headers": [], "client": ("127.0.0.1", 40000)}

        async def receive(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.body" and message["body"]:
                answers.append(message["body"])

        await app(scope, receive, send)
        if answers:
            return answers[0]
    raise SystemExit("no request was bid on")


def _span_cost(config: env.Config, request: bytes, response: bytes,
               count: int = 2000) -> float:
    """Fewer spans than the batch processor's queue holds (2048), so none is dropped."""
    telemetry.configure(config, service_name=telemetry.BIDDER_SERVICE)
    cpu = time.process_time()
    for _ in range(count):
        with telemetry.server_span("POST /v1/bid", carrier={}, attributes={
                "http.request.method": "POST", "url.path": "/v1/bid",
                "openrtb.exchange": "open"}) as span:
            telemetry.bid_attributes(span, status=200, body=response, request_body=request)
    telemetry.shutdown()  # returns once every span is exported
    return (time.process_time() - cpu) / count * 1e6


async def _main(args: argparse.Namespace, data_dir: str, endpoint: str) -> None:
    config = env.load({"CAMPAIGN_EXPRESS__SECRET_KEY": secrets.token_urlsafe(32),
                       "CAMPAIGN_EXPRESS__DATA_DIR": data_dir,
                       "CAMPAIGN_EXPRESS__LOG": "warning"})
    traced = {
        "on, all sampled": dataclasses.replace(
            config, otlp_traces_endpoint=endpoint, otlp_protocol="http/protobuf",
            otel_traces_sampler="always_on"),
        "on, 1 % sampled": dataclasses.replace(
            config, otlp_traces_endpoint=endpoint, otlp_protocol="http/protobuf",
            otel_traces_sampler="parentbased_traceidratio", otel_traces_sampler_ratio=0.01),
    }
    service = BidderService(config=config, bus=InProcessBus(), store=MemoryStore())
    await service.start()
    service.install(snapshots.encode(generate_snapshot(args.campaigns, 7, version=1)))
    bodies = request_bodies(2000, 7, corpus_requests(os.environ.get("OPENRTB_CORPUS", "")))
    app = BidderApp(service)
    await _measure(app, bodies, 500)  # warm-up: caches, the model's first calls
    settings: list[tuple[str, env.Config | None]] = [("off", None), *traced.items()]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in settings}
    for round_number in range(args.rounds):
        # Each round starts with the next setting: the bidder's state drifts over a run
        # (caches, budgets), and no setting should always come first.
        shift = round_number % len(settings)
        for name, traced_config in settings[shift:] + settings[:shift]:
            if traced_config is not None:
                telemetry.configure(traced_config, service_name=telemetry.BIDDER_SERVICE)
            results[name].append(await _measure(app, bodies, args.requests))
            telemetry.shutdown()  # exports what is left, so the next setting starts clean
    response = await _one_answer(app, bodies)
    await service.stop()
    for name, rounds in results.items():
        cpu = statistics.median(r[0] for r in rounds)
        wall = statistics.median(r[1] for r in rounds)
        print(f"tracing {name:15}: {cpu:7.1f} µs CPU, {wall:7.1f} µs wall per request "
              f"(median of {args.rounds} rounds of {args.requests:,})")
    print(f"receiver: {_Receiver.counts['posts']} OTLP posts, "
          f"{_Receiver.counts['bytes']:,} bytes, for "
          f"{args.rounds * args.requests:,} requests in each traced setting")

    for name, traced_config in traced.items():
        print(f"tracing code alone, {name}: "
              f"{_span_cost(traced_config, bodies[0], response):.1f} µs CPU per request")

    scope = {"headers": []}
    per_request = min(timeit.repeat(
        lambda: REQUEST.reset(REQUEST.set(HttpRequestContext(scope)))
        if telemetry.tracer is None else None, number=200_000, repeat=5)) / 200_000 * 1e9
    print(f"tracing off, per request: log context + ContextVar.set/reset + check "
          f"{per_request:.0f} ns")
    print(f"machine: reference loop {reference_loop_ms():.0f} ms of CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--campaigns", type=int, default=1000)
    args = parser.parse_args()
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/v1/traces"
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            asyncio.run(_main(args, data_dir, endpoint))
    finally:
        receiver.shutdown()


if __name__ == "__main__":
    main()
