"""The bidder under load: `python -m bidding` answering OpenRTB requests at a fixed offered
rate, over HTTP from 127.0.0.1. Prints what it measures; nothing is estimated.

    .venv/bin/python benchmarks/bidder_load.py [--rate 1000] [--seconds 20] [--campaigns 10000]
        [--generators 1] [--find-max]
        [--redis-url redis://127.0.0.1:6379/13]

1. Generates a snapshot of ``--campaigns`` active campaigns (seeded) with banner, video,
   native and audio creatives, country, device, OS and category targeting, some deals,
   dayparts and frequency caps, budgets that cannot run out during the run, and one default
   exchange without authentication; publishes it as the platform does (object store,
   pointer in the `config` bucket, message on `config.snapshot`) on a nats-server of the
   run's own with the default 1 MB message limit.
2. Starts the bidder on free ports (its Redis is the dedicated ``--redis-url`` database,
   flushed first) and waits until it serves the snapshot.
3. Replays requests open-loop from ``--generators`` separate processes: every send time is
   fixed in advance and a request goes out on time whether or not earlier ones were answered
   (a free keep-alive connection is taken, or a new one opened), and latency runs from the
   scheduled send time, so a slow bidder cannot hide its queue (no coordinated omission).
   The generators run on uvloop with a bare protocol (no task or stream per request): on
   two cores their CPU is taken from the bidder's.
   Bodies are the requests of the corpus in ``OPENRTB_CORPUS`` (when set) and generated
   ones, varied in country, device, OS, sizes and user so they meet the campaigns.
4. Prints offered and answered rate, latency percentiles, bids / no-bids / errors, the
   bidder's CPU seconds per request and peak RSS, its own `bids_total_latency_us` histogram,
   and how late the generators sent (their own lag, which is part of the latency shown);
   with each step, the machine's load average and the CPU time of a fixed pure-Python loop
   (the same code runs 1.5 times slower on this shared machine in a bad hour).

``--find-max`` steps the offered rate up until p99 exceeds ``--p99-limit-ms`` or a request
fails, and reports the highest rate that kept p99 under the limit. Everything started is
stopped by pid, the private nats-server included; the Redis database is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import multiprocessing
import os
import random
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import redis
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bidding import snapshot as snapshots  # noqa: E402
from bidding.openrtb import InvalidRequest, decode_request  # noqa: E402
from bidding.snapshot import CampaignEntry, CreativeEntry, ExchangeEntry, Snapshot  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COUNTRIES = ("USA", "CAN", "GBR", "DEU", "FRA", "NLD", "ESP", "ITA", "BRA", "MEX", "JPN",
             "AUS", "IND", "AUT", "CHE", "SWE", "POL", "BEL", "IRL", "PRT")
DEVICE_CODES = {"mobile": 1, "desktop": 2, "ctv": 3, "phone": 4, "tablet": 5,
                "connected_device": 6}
OPERATING_SYSTEMS = {"ios": "iOS", "android": "Android", "windows": "Windows",
                     "macos": "macOS"}
CATEGORIES = tuple(f"IAB{number}" for number in range(1, 27))
BANNER_SIZES = ((300, 250), (728, 90), (320, 50), (160, 600), (300, 600), (320, 480),
                (970, 250), (336, 280))
VIDEO_SIZES = ((640, 360), (640, 480), (1280, 720), (1920, 1080))
FORMATS = ("banner",) * 11 + ("video",) * 4 + ("native",) * 3 + ("audio",) * 2
TIME_ZONES = ("UTC", "America/New_York", "Europe/London", "Europe/Berlin", "Asia/Tokyo")
CURRENCIES = ("USD",) * 17 + ("EUR", "EUR", "GBP")
USD_RATES = {"EUR": Decimal("0.92"), "GBP": Decimal("0.79")}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEALS = tuple(f"deal-{number}" for number in range(1, 41))
SEGMENTS = tuple(f"seg-{number}" for number in range(1, 21))
USERS = 50_000  # distinct user ids in requests: repeat visits reach frequency caps
BODIES_PER_GENERATOR = 4_000
DEFAULT_RATES = (250, 500, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10_000)
REQUEST_TIMEOUT_S = 2.0


def percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# --- campaigns -----------------------------------------------------------------------------


def _creative(rng: random.Random, creative_id: int, advertiser_id: int) -> CreativeEntry:
    format_ = rng.choice(FORMATS)
    sizes: tuple[tuple[int, int], ...] = ()
    mimes: tuple[str, ...] = ()
    protocols: tuple[int, ...] = ()
    duration = None
    if format_ == "banner":
        sizes = tuple(rng.sample(BANNER_SIZES, rng.randint(1, 2)))
        mimes = ("image/jpeg",)
    elif format_ == "video":
        sizes = (rng.choice(VIDEO_SIZES),) if rng.random() < 0.7 else ()
        mimes, protocols, duration = ("video/mp4",), (2, 3, 7), rng.choice((6, 15, 30))
    elif format_ == "audio":
        mimes, protocols, duration = ("audio/mpeg",), (2, 3, 7), rng.choice((15, 30))
    return CreativeEntry(
        id=creative_id, name=f"creative {creative_id}", format=format_, sizes=sizes,
        asset_url=f"https://cdn.example.com/assets/{creative_id}.bin",
        click_url=f"https://brand{advertiser_id}.example.com/landing",
        adomain=f"brand{advertiser_id}.example.com",
        categories=(rng.choice(CATEGORIES),) if rng.random() < 0.5 else (),
        mimes=mimes, protocols=protocols, duration_seconds=duration)


def generate_snapshot(count: int, seed: int, *, version: int) -> Snapshot:
    """``count`` active campaigns, the same for the same seed."""
    rng = random.Random(seed)
    now = int(time.time())
    campaigns = []
    creative_id = 0
    for campaign_id in range(1, count + 1):
        advertiser_id = campaign_id % 400 + 1
        creatives = []
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            creative_id += 1
            creatives.append(_creative(rng, creative_id, advertiser_id))
        base_cpm = Decimal(rng.randint(20, 600)) / 100
        dayparts: dict[str, tuple[int, ...]] = {}
        if rng.random() < 0.1:
            first = rng.randint(0, 8)
            dayparts = {day: tuple(range(first, first + 16)) for day in WEEKDAYS}
        capped = rng.random() < 0.15
        campaigns.append(CampaignEntry(
            id=campaign_id, advertiser_id=advertiser_id, name=f"campaign {campaign_id}",
            currency=rng.choice(CURRENCIES), time_zone=rng.choice(TIME_ZONES),
            start_at=now - 86_400, end_at=now + 365 * 86_400, dayparts=dayparts,
            total_budget=Decimal(10_000_000), daily_budget=Decimal(1_000_000),
            pacing=rng.choice(("even", "even", "accelerated")),
            base_bid_cpm=base_cpm, max_bid_cpm=base_cpm * Decimal("2.5"),
            frequency_cap_hour=rng.randint(2, 5) if capped else None,
            frequency_cap_day=rng.randint(5, 20) if capped and rng.random() < 0.5 else None,
            countries=tuple(rng.sample(COUNTRIES, rng.randint(1, 3)))
            if rng.random() < 0.9 else (),
            device_types=tuple(rng.sample(tuple(DEVICE_CODES), rng.randint(1, 2)))
            if rng.random() < 0.5 else (),
            operating_systems=tuple(rng.sample(tuple(OPERATING_SYSTEMS), rng.randint(1, 2)))
            if rng.random() < 0.25 else (),
            categories=tuple(rng.sample(CATEGORIES, rng.randint(1, 3)))
            if rng.random() < 0.3 else (),
            segments=tuple(rng.sample(SEGMENTS, 2)) if rng.random() < 0.05 else (),
            deal_ids=(rng.choice(DEALS),) if rng.random() < 0.05 else (),
            creatives=tuple(creatives)))
    exchange = ExchangeEntry(slug="loadtest", name="Load test exchange", seat="seat-load",
                             is_default=True, auth="none")
    return Snapshot(version=version, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()),
                    campaigns=tuple(campaigns), exchanges=(exchange,), usd_rates=USD_RATES)


# --- requests ------------------------------------------------------------------------------


def corpus_requests(directory: str) -> list[dict[str, Any]]:
    """The corpus files the bidder decodes as bid requests (responses and broken ones are
    left out)."""
    requests = []
    for path in sorted(Path(directory).glob("*.json")):
        data = path.read_bytes()
        try:
            decode_request(data)
        except InvalidRequest:
            continue
        requests.append(json.loads(data))
    return requests


def _generated_request(rng: random.Random) -> dict[str, Any]:
    format_ = rng.choice(FORMATS)
    imp: dict[str, Any] = {"id": "1", "bidfloor": round(rng.uniform(0.05, 1.5), 2),
                           "bidfloorcur": "USD", "secure": 1}
    if format_ == "banner":
        sizes = rng.sample(BANNER_SIZES, rng.randint(1, 2))
        imp["banner"] = {"w": sizes[0][0], "h": sizes[0][1],
                         "format": [{"w": w, "h": h} for w, h in sizes], "pos": 1}
    elif format_ == "video":
        width, height = rng.choice(VIDEO_SIZES)
        imp["video"] = {"mimes": ["video/mp4"], "minduration": 5, "maxduration": 30,
                        "protocols": [2, 3, 7], "w": width, "h": height, "plcmt": 1}
    elif format_ == "audio":
        imp["audio"] = {"mimes": ["audio/mpeg"], "minduration": 5, "maxduration": 30,
                        "protocols": [2, 3, 7]}
    else:
        native = {"ver": "1.2", "assets": [
            {"id": 1, "required": 1, "title": {"len": 90}},
            {"id": 2, "required": 1, "img": {"type": 3, "w": 1200, "h": 627}}]}
        imp["native"] = {"request": json.dumps(native), "ver": "1.2"}
    request: dict[str, Any] = {"id": "x", "at": 1, "tmax": rng.choice((100, 150, 300)),
                               "cur": ["USD"], "imp": [imp],
                               "device": {"ua": "Mozilla/5.0", "ip": "203.0.113.7"},
                               "user": {"id": "x"}}
    if rng.random() < 0.6:
        request["site"] = {"id": "s1", "domain": f"news{rng.randint(1, 300)}.example.org",
                           "page": "https://news.example.org/article",
                           "cat": [rng.choice(CATEGORIES)],
                           "publisher": {"id": f"pub-{rng.randint(1, 50)}"}}
    else:
        request["app"] = {"id": "a1", "bundle": f"com.example.app{rng.randint(1, 300)}",
                          "cat": [rng.choice(CATEGORIES)],
                          "publisher": {"id": f"pub-{rng.randint(1, 50)}"}}
    if rng.random() < 0.05:
        imp["pmp"] = {"private_auction": 0, "deals": [
            {"id": rng.choice(DEALS), "bidfloor": 0.5, "bidfloorcur": "USD"}]}
    return request


def _varied(rng: random.Random, template: dict[str, Any], number: int) -> dict[str, Any]:
    """``template`` with a new id and, mostly, the country, device, OS, sizes and user of a
    generated visitor."""
    request = json.loads(json.dumps(template))
    request["id"] = f"load-{number}"
    if rng.random() < 0.15:
        return request
    device = request.setdefault("device", {})
    device.setdefault("geo", {})["country"] = rng.choice(COUNTRIES)
    device["devicetype"] = DEVICE_CODES[rng.choice(tuple(DEVICE_CODES))]
    device["os"] = OPERATING_SYSTEMS[rng.choice(tuple(OPERATING_SYSTEMS))]
    user = request.get("user")
    if not isinstance(user, dict):
        user = request["user"] = {}
    user["id"] = f"user-{rng.randrange(USERS)}"
    user.pop("buyeruid", None)
    if rng.random() < 0.5:
        user["data"] = [{"id": "dmp", "segment": [{"id": segment} for segment in
                                                  rng.sample(SEGMENTS, rng.randint(1, 3))]}]
    for imp in request.get("imp", ()):
        banner = imp.get("banner") if isinstance(imp, dict) else None
        if isinstance(banner, dict) and rng.random() < 0.7:
            width, height = rng.choice(BANNER_SIZES)
            banner.update(w=width, h=height, format=[{"w": width, "h": height}])
    return request


def request_bodies(count: int, seed: int, corpus: list[dict[str, Any]]) -> list[bytes]:
    """``count`` request bodies: two in five from corpus templates when there is a corpus."""
    rng = random.Random(seed)
    bodies = []
    for number in range(count):
        is_corpus = corpus and rng.random() < 0.4
        template = rng.choice(corpus) if is_corpus else _generated_request(rng)
        bodies.append(json.dumps(_varied(rng, template, number),
                                 separators=(",", ":")).encode())
    return bodies


# --- the generator process -----------------------------------------------------------------


@dataclass
class _Tally:
    latencies_ms: list[float]
    lags_ms: list[float]
    bids: int = 0
    no_bids: int = 0
    errors: int = 0
    timeouts: int = 0
    connections_opened: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight. Answers are
    read straight off the transport (no stream, no task per request): the generator shares
    the machine with the bidder, so what it spends per request is kept small."""

    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.socket: socket.socket | None = None
        self.buffer = b""
        self.pending: tuple[float, bool] | None = None  # (scheduled time, counted)
        self.sent_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.socket = transport.get_extra_info("socket")
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes, scheduled: float, is_counted: bool) -> None:
        assert self.transport is not None
        self.pending, self.sent_at = (scheduled, is_counted), time.monotonic()
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.pending is None:
            return
        head = self.buffer[:end]
        length = 0
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line[15:])
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length:]
        (scheduled, is_counted), self.pending = self.pending, None
        self.client.answered(self, int(head[9:12]), scheduled, is_counted)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.lost(self, "ConnectionLost")


class _Client:
    """Keep-alive connections to the bidder: a request takes an idle one, or opens one (up
    to ``max_connections``; past that it waits for the first to free up)."""

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.idle: list[_Connection] = []
        self.busy: set[_Connection] = set()
        self.opening = 0
        self.waiting: collections.deque[tuple[bytes, float, bool]] = collections.deque()
        self.opened_total = 0
        self.tally = _Tally(latencies_ms=[], lags_ms=[])

    def request(self, data: bytes, scheduled: float, is_counted: bool) -> None:
        if self.idle:
            self._send(self.idle.pop(), data, scheduled, is_counted)
            return
        self.waiting.append((data, scheduled, is_counted))
        if len(self.busy) + len(self.idle) + self.opening < self.max_connections:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(lambda: _Connection(self),
                                                         self.host, self.port)
        except OSError as error:
            self.opening -= 1
            if self.waiting:
                _, _, is_counted = self.waiting.popleft()
                self._error(type(error).__name__, is_counted)
            return
        self.opening -= 1
        self.opened_total += 1
        self._free(connection)

    def _send(self, connection: _Connection, data: bytes, scheduled: float,
              is_counted: bool) -> None:
        if is_counted:
            self.tally.lags_ms.append((time.monotonic() - scheduled) * 1000)
        self.busy.add(connection)
        connection.send(data, scheduled, is_counted)

    def _free(self, connection: _Connection) -> None:
        self.busy.discard(connection)
        if self.waiting:
            self._send(connection, *self.waiting.popleft())
        else:
            self.idle.append(connection)

    def answered(self, connection: _Connection, status: int, scheduled: float,
                 is_counted: bool) -> None:
        finished = time.monotonic()
        self._free(connection)
        if not is_counted:
            return
        tally = self.tally
        tally.latencies_ms.append((finished - scheduled) * 1000)
        if status == 200:
            tally.bids += 1
        elif status == 204:
            tally.no_bids += 1
        else:
            self._error(f"HTTP {status}", True)

    def lost(self, connection: _Connection, kind: str) -> None:
        """A connection closed or timed out: its request (if any) is an error."""
        self.busy.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.pending is not None:
            (_, is_counted), connection.pending = connection.pending, None
            self._error(kind, is_counted)
            tally = self.tally
            tally.timeouts += is_counted and kind == "TimeoutError"

    def _error(self, kind: str, is_counted: bool) -> None:
        if is_counted:
            self.tally.errors += 1
            self.tally.error_kinds[kind] = self.tally.error_kinds.get(kind, 0) + 1

    def expire(self, now: float) -> None:
        """Requests in flight past REQUEST_TIMEOUT_S are errors; their connection closes."""
        for connection in [connection for connection in self.busy
                           if now - connection.sent_at > REQUEST_TIMEOUT_S]:
            self.lost(connection, "TimeoutError")
            if connection.transport is not None:
                connection.transport.abort()

    def wait_for_answers(self, seconds: float) -> None:
        """Blocks until an answer is readable or ``seconds`` pass, to the microsecond.
        uvloop's timers count whole milliseconds (a 0.3 ms sleep returns at once), so
        waiting for the next send time on them either spins the generator, taking a core
        from the bidder, or sends late."""
        sockets = [connection.socket for connection in self.busy
                   if connection.socket is not None]
        select.select(sockets, [], [], seconds)

    @property
    def in_flight(self) -> int:
        return len(self.busy) + len(self.waiting)


async def _replay(client: _Client, bodies: list[bytes], *, rate: float, phase: float,
                  start_at: float, warmup: float, seconds: float) -> _Tally:
    """Sends on the fixed schedule ``start_at + phase + i / rate`` for warmup + seconds;
    counts the requests scheduled after the warm-up."""
    head_template = (b"POST /v1/bid HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nx-openrtb-version: 2.6\r\n"
                     b"Content-Length: %d\r\n\r\n")
    requests = [head_template % len(body) + body for body in bodies]
    client.tally = tally = _Tally(latencies_ms=[], lags_ms=[])
    opened_before = client.opened_total
    total = int((warmup + seconds) * rate)
    measured_from = start_at + warmup
    number = 0
    next_sweep = 0.0
    while number < total:
        now = time.monotonic()
        if now >= next_sweep:
            client.expire(now)
            next_sweep = now + 0.1
        due = start_at + phase + number / rate
        if due - now > 0.002:
            await asyncio.sleep(due - now - 0.001)
            continue
        if due > now:
            client.wait_for_answers(due - now)
            await asyncio.sleep(0)  # the loop reads what arrived
            continue
        while number < total and due <= now:
            client.request(requests[number % len(requests)], due, due >= measured_from)
            number += 1
            due = start_at + phase + number / rate
    deadline = time.monotonic() + REQUEST_TIMEOUT_S + 0.5
    while client.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        client.expire(time.monotonic())
    tally.connections_opened = client.opened_total - opened_before
    return tally


def generator_main(pipe: Connection, port: int, generator: int, seed: int,
                   corpus_directory: str, max_connections: int) -> None:
    """One generator process: builds its bodies, then runs the steps the parent sends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    corpus = corpus_requests(corpus_directory) if corpus_directory else []
    bodies = request_bodies(BODIES_PER_GENERATOR, seed + generator, corpus)

    async def serve() -> None:
        client = _Client("127.0.0.1", port, max_connections)
        pipe.send(("ready", len(corpus)))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command[0] == "stop":
                break
            _, rate, phase, start_at, warmup, seconds = command
            cpu_before = time.process_time()
            tally = await _replay(client, bodies, rate=rate, phase=phase, start_at=start_at,
                                  warmup=warmup, seconds=seconds)
            pipe.send(("done", tally, time.process_time() - cpu_before))
        for connection in client.idle:
            if connection.transport is not None:
                connection.transport.close()

    uvloop.run(serve())


# --- the bidder process --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@dataclass
class Bidder:
    process: subprocess.Popen[bytes]
    http_port: int
    metrics_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid)

    def peak_rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return math.nan

    def metrics(self) -> dict[str, float]:
        _, text = _get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        values = {}
        for line in text.decode().splitlines():
            if line.startswith(("bids_total_latency_us", "bids_no_bid_total",
                                "bids_shed_total")):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


@dataclass
class Bidders:
    """Several bidder processes side by side, as several pods behind a load balancer: the
    generators split across them; CPU and metrics add up, memory is the largest."""

    members: list[Bidder]

    @property
    def pid(self) -> str:
        return ",".join(str(member.pid) for member in self.members)

    def cpu_seconds(self) -> float:
        return sum(member.cpu_seconds() for member in self.members)

    def peak_rss_mib(self) -> float:
        return max(member.peak_rss_mib() for member in self.members)

    def metrics(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for member in self.members:
            for name, value in member.metrics().items():
                total[name] = total.get(name, 0.0) + value
        return total


def start_bidder(*, nats_url: str, redis_url: str, data_dir: Path, campaigns: int,
                 env_overrides: dict[str, str]) -> Bidder:
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CAMPAIGN_EXPRESS__")}
    environ.update({
        "CAMPAIGN_EXPRESS__API__HOST": "127.0.0.1",
        "CAMPAIGN_EXPRESS__API__HTTP_PORT": str(http_port),
        "CAMPAIGN_EXPRESS__API__GRPC_PORT": str(grpc_port),
        "CAMPAIGN_EXPRESS__METRICS__PORT": str(metrics_port),
        "CAMPAIGN_EXPRESS__SECRET_KEY": secrets.token_urlsafe(32),
        "CAMPAIGN_EXPRESS__DATA_DIR": str(data_dir),
        "CAMPAIGN_EXPRESS__LOG": "warning",
        "REDIS_URL": redis_url,
        "NATS_URL": nats_url,
        **env_overrides,
    })
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "bidder.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bidding"], cwd=ROOT, env=environ,
                                   stdout=log, stderr=subprocess.STDOUT)
    bidder = Bidder(process, http_port, metrics_port, log_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bidder exited with {process.returncode}:\n"
                               + log_path.read_text()[-3000:])
        try:
            status, body = _get(f"http://127.0.0.1:{http_port}/ready", timeout=1.0)
            if status == 200 and json.loads(body)["campaigns"] == campaigns:
                return bidder
        except OSError:
            pass
        time.sleep(0.25)
    stop_process(process)
    raise RuntimeError("the bidder was not ready within 120 s:\n" + log_path.read_text()[-3000:])


def stop_process(process: subprocess.Popen[bytes] | multiprocessing.Process) -> None:
    if isinstance(process, subprocess.Popen):
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        return
    process.join(10)
    if process.is_alive() and process.pid is not None:
        os.kill(process.pid, signal.SIGKILL)
        process.join()


# --- the snapshot in NATS, the Redis database ----------------------------------------------


def start_private_nats(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A NATS server of this run's own, with JetStream and the default 1 MB message limit:
    the benchmark's snapshot must reach the bidder the way the platform publishes it."""
    port = _free_port()
    config = directory / "nats.conf"
    config.write_text(f"listen: 127.0.0.1:{port}\n"
                      f'jetstream {{ store_dir: "{directory / "jetstream"}" }}\n')
    with (directory / "nats.log").open("wb") as log:
        process = subprocess.Popen(["nats-server", "-c", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return process, f"nats://127.0.0.1:{port}"
        time.sleep(0.1)
    stop_process(process)
    raise RuntimeError("the private nats-server did not start:\n"
                       + (directory / "nats.log").read_text()[-2000:])


async def publish_snapshot(nats_url: str, data: bytes) -> None:
    """Publishes the snapshot as the platform does: object, pointer in the bucket, message."""
    from campaign_express.backends.nats_bus import NatsBus

    bus = NatsBus(nats_url, timeout=10.0)
    await bus.connect()
    try:
        await snapshots.publish(bus, snapshots.decode(data))
    finally:
        await bus.close()


def flush_redis(redis_url: str) -> int:
    """Empties the benchmark's database; returns the server's commands processed so far."""

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        client.flushdb()
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def redis_stats(redis_url: str) -> tuple[int, float]:
    """The Redis server's commands processed and CPU seconds so far (server-wide)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        cpu = client.info("cpu")
        return (int(client.info("stats")["total_commands_processed"]),
                float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]))
    finally:
        client.close()


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_seconds() -> tuple[float, float]:
    """CPU seconds the cores spent idle (waiting on I/O included) and stolen by the
    hypervisor for other guests, since boot (/proc/stat). Busy time is what the cores did
    not spend so: the kernel measures idle time exactly, while its busy counters are
    sampled at each tick, and on this kind of VM they fell a fifth short of the processes'
    own CPU time."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    _, _, _, idle, iowait, _, _, steal = ticks[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (idle + iowait) / tick, steal / tick


# --- one step at one rate ------------------------------------------------------------------


@dataclass
class StepResult:
    rate: float
    seconds: float
    answered_rate: float
    latencies_ms: list[float]
    bids: int
    no_bids: int
    errors: int
    timeouts: int
    error_kinds: dict[str, int]
    cpu_ms_per_request: float
    peak_rss_mib: float
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    generator_cpu_share: float
    generators: int
    connections_opened: int
    redis_commands_per_request: float
    histogram: dict[str, float]
    load_before: float  # the machine's 1-minute load average as the step began
    reference_ms: float  # the reference loop's CPU time just before the step
    # Cores busy during the measured seconds: the whole machine, and the parts of it.
    machine_cores: float
    stolen_cores: float  # taken by the hypervisor: a shared machine's other guests
    bidder_cores: float
    redis_cores: float
    nats_cores: float

    @property
    def requests(self) -> int:
        return self.bids + self.no_bids + self.errors

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)


def reference_loop_ms() -> float:
    """CPU time of a fixed pure-Python loop: shared virtual machines change speed from hour
    to hour, and a step's CPU per request means little without it."""
    started = time.process_time()
    total = 0
    for number in range(1_000_000):
        total += number * number % 7
    return (time.process_time() - started) * 1000


def _histogram_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: value - before.get(name, 0.0) for name, value in after.items()}


def run_step(bidder: Bidders, generators: list[tuple[multiprocessing.Process, Connection]], *,
             rate: float, seconds: float, warmup: float, redis_url: str,
             nats_pid: int) -> StepResult:
    per_generator = rate / len(generators)
    load_before = os.getloadavg()[0]
    reference_ms = reference_loop_ms()
    start_at = time.monotonic() + 0.5
    for position, (_, pipe) in enumerate(generators):
        pipe.send(("run", per_generator, position / rate, start_at, warmup, seconds))
    time.sleep(max(0.0, start_at + warmup - time.monotonic()))
    cpu_before, metrics_before = bidder.cpu_seconds(), bidder.metrics()
    (commands_before, redis_before), nats_before = redis_stats(redis_url), process_cpu_seconds(
        nats_pid)
    (idle_before, stolen_before), measured_from = machine_seconds(), time.monotonic()
    time.sleep(max(0.0, start_at + warmup + seconds - time.monotonic()))
    (idle_after, stolen_after), measured_to = machine_seconds(), time.monotonic()
    cpu_after, metrics_after = bidder.cpu_seconds(), bidder.metrics()
    (commands_after, redis_after), nats_after = redis_stats(redis_url), process_cpu_seconds(
        nats_pid)
    tallies, generator_cpu = [], 0.0
    for _, pipe in generators:
        _, tally, cpu = pipe.recv()
        tallies.append(tally)
        generator_cpu += cpu
    latencies = sorted(value for tally in tallies for value in tally.latencies_ms)
    lags = sorted(value for tally in tallies for value in tally.lags_ms)
    bids = sum(tally.bids for tally in tallies)
    no_bids = sum(tally.no_bids for tally in tallies)
    errors = sum(tally.errors for tally in tallies)
    requests = max(1, bids + no_bids + errors)
    not_busy = idle_after - idle_before + stolen_after - stolen_before
    busy_cores = (os.cpu_count() or 1) - not_busy / (measured_to - measured_from)
    return StepResult(
        rate=rate, seconds=seconds, answered_rate=(bids + no_bids) / seconds,
        latencies_ms=latencies, bids=bids, no_bids=no_bids, errors=errors,
        timeouts=sum(tally.timeouts for tally in tallies),
        error_kinds={kind: sum(tally.error_kinds.get(kind, 0) for tally in tallies)
                     for kind in {kind for tally in tallies for kind in tally.error_kinds}},
        cpu_ms_per_request=(cpu_after - cpu_before) * 1000 / requests,
        peak_rss_mib=bidder.peak_rss_mib(),
        lag_p50_ms=percentile(lags, 0.5), lag_p99_ms=percentile(lags, 0.99),
        lag_max_ms=lags[-1] if lags else math.nan,
        generator_cpu_share=generator_cpu / (warmup + seconds) / len(generators),
        generators=len(generators),
        connections_opened=sum(tally.connections_opened for tally in tallies),
        redis_commands_per_request=(commands_after - commands_before) / requests,
        histogram=_histogram_delta(metrics_before, metrics_after), load_before=load_before,
        reference_ms=reference_ms, machine_cores=busy_cores,
        stolen_cores=(stolen_after - stolen_before) / seconds,
        bidder_cores=(cpu_after - cpu_before) / seconds,
        redis_cores=(redis_after - redis_before) / seconds,
        nats_cores=(nats_after - nats_before) / seconds)


def _bucket_quantile(histogram: dict[str, float], share: float) -> str:
    buckets = sorted(((float(name.split('le="')[1].split('"')[0]), count)
                      for name, count in histogram.items()
                      if name.startswith("bids_total_latency_us_bucket")),
                     key=lambda bucket: bucket[0])
    total = histogram.get("bids_total_latency_us_count", 0.0)
    for bound, count in buckets:
        if total and count >= share * total:
            return "> 100000" if math.isinf(bound) else f"<= {bound:,.0f}"
    return "n/a"


def report(step: StepResult) -> None:
    requests = max(1, step.requests)
    ordered = step.latencies_ms
    print(f"offered rate        {step.rate:,.0f} requests/s for {step.seconds:.0f} s "
          f"({step.requests:,} requests)")
    print(f"machine             load average {step.load_before:.2f} before the step; "
          f"reference loop {step.reference_ms:.0f} ms of CPU (lower is a faster machine)")
    print(f"answered rate       {step.answered_rate:,.0f} requests/s")
    print("latency ms          p50 {:.2f}  p95 {:.2f}  p99 {:.2f}  p99.9 {:.2f}  max {:.2f}"
          .format(*(percentile(ordered, share) for share in (0.5, 0.95, 0.99, 0.999)),
                  ordered[-1] if ordered else math.nan))
    print(f"outcomes            bids {step.bids / requests:.1%}  no-bids "
          f"{step.no_bids / requests:.1%}  errors {step.errors / requests:.1%} "
          f"({step.errors}" + "".join(f", {kind} {count}" for kind, count in
                                      sorted(step.error_kinds.items())) + ")")
    print(f"bidder CPU          {step.cpu_ms_per_request:.3f} ms per request "
          f"({step.cpu_ms_per_request * step.rate / 1000:.0%} of one core)")
    print(f"bidder peak RSS     {step.peak_rss_mib:,.0f} MiB (VmHWM)")
    count = step.histogram.get("bids_total_latency_us_count", 0.0)
    if count:
        mean = step.histogram.get("bids_total_latency_us_sum", 0.0) / count
        print(f"bidder histogram    bids_total_latency_us: {count:,.0f} observed, mean "
              f"{mean:,.0f} µs, p50 {_bucket_quantile(step.histogram, 0.5)} µs, p99 "
              f"{_bucket_quantile(step.histogram, 0.99)} µs (bucket bounds)")
    reasons = {name.split('reason="')[1].split('"')[0]: value
               for name, value in step.histogram.items()
               if name.startswith("bids_no_bid_total{") and value > 0}
    if reasons:
        print("no-bid reasons      " + ", ".join(
            f"{reason} {value:,.0f}" for reason, value in sorted(
                reasons.items(), key=lambda item: -item[1])))
    shed = step.histogram.get("bids_shed_total", 0.0)
    print(f"redis commands      {step.redis_commands_per_request:.2f} per request "
          f"(server-wide count); shed by the agent queue: {shed:,.0f}")
    generator_cores = step.generator_cpu_share * step.generators
    rest = (step.machine_cores - step.bidder_cores - generator_cores - step.redis_cores
            - step.nats_cores)
    print(f"cores busy          {step.machine_cores:.2f} of {os.cpu_count()}: bidders "
          f"{step.bidder_cores:.2f}, generators {generator_cores:.2f}, Redis "
          f"{step.redis_cores:.2f}, NATS {step.nats_cores:.2f}, the rest {rest:.2f}; "
          f"stolen by the hypervisor {step.stolen_cores:.2f}")
    print(f"generator lag ms    p50 {step.lag_p50_ms:.2f}  p99 {step.lag_p99_ms:.2f}  max "
          f"{step.lag_max_ms:.2f} (send time minus scheduled time, included above); "
          f"generator CPU {step.generator_cpu_share:.0%} of a core each, "
          f"{step.connections_opened} connections opened")


# --- main ----------------------------------------------------------------------------------


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="offered requests/s")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds a step")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--campaigns", type=int, default=10_000)
    parser.add_argument("--generators", type=int, default=1, help="generator processes")
    parser.add_argument("--connections", type=int, default=256,
                        help="most keep-alive connections per generator")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--find-max", action="store_true",
                        help="step the rate up until p99 passes --p99-limit-ms or errors appear")
    parser.add_argument("--rates", default=",".join(str(rate) for rate in DEFAULT_RATES),
                        help="the --find-max steps, comma-separated")
    parser.add_argument("--p99-limit-ms", type=float, default=10.0)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13",
                        help="a database of its own: it is flushed before and after")
    parser.add_argument("--profile-after", type=float, default=0.0,
                        help="print the bidder's pid and wait this many seconds before the "
                        "first step, for attaching a profiler")
    parser.add_argument("--bidders", type=int, default=1,
                        help="bidder processes side by side (each gets its own generator)")
    parser.add_argument("--bidder-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the bidder (repeatable)")
    return parser.parse_args()


def main() -> None:
    arguments = _parse()
    if arguments.redis_url.rstrip("/").endswith(":6379") or arguments.redis_url.endswith("/0"):
        raise SystemExit("--redis-url must name a database of its own, e.g. .../13")
    corpus_directory = os.environ.get("OPENRTB_CORPUS", "")
    snapshot = generate_snapshot(arguments.campaigns, arguments.seed,
                                 version=int(time.time()))
    data = snapshots.encode(snapshot)
    print(f"{arguments.campaigns:,} campaigns, "
          f"{sum(len(c.creatives) for c in snapshot.campaigns):,} creatives; snapshot "
          f"{len(data) / 1e6:.1f} MB")
    context = multiprocessing.get_context("spawn")
    generators: list[tuple[multiprocessing.Process, Connection]] = []
    bidder: Bidders | None = None
    private_nats: subprocess.Popen[bytes] | None = None
    with tempfile.TemporaryDirectory(prefix="bidder-load-") as data_dir:
        try:
            private_nats, nats_url = start_private_nats(Path(data_dir))
            flush_redis(arguments.redis_url)
            asyncio.run(publish_snapshot(nats_url, data))
            overrides = dict(item.split("=", 1) for item in arguments.bidder_env)
            bidder = Bidders([])
            for number in range(arguments.bidders):
                bidder.members.append(start_bidder(
                    nats_url=nats_url, redis_url=arguments.redis_url,
                    data_dir=Path(data_dir) / f"bidder-{number}",
                    campaigns=arguments.campaigns, env_overrides=overrides))
            print(f"bidder pid(s) {bidder.pid} ready on 127.0.0.1 port(s) "
                  f"{', '.join(str(member.http_port) for member in bidder.members)}; RSS "
                  f"after load {bidder.peak_rss_mib():,.0f} MiB")
            for number in range(max(arguments.generators, arguments.bidders)):
                parent_end, child_end = context.Pipe()
                target = bidder.members[number % len(bidder.members)]
                process = context.Process(target=generator_main, args=(
                    child_end, target.http_port, number, arguments.seed, corpus_directory,
                    arguments.connections), daemon=True)
                process.start()
                generators.append((process, parent_end))
            corpus_size = [pipe.recv()[1] for _, pipe in generators][0]
            print(f"{len(generators)} generator process(es), "
                  f"{BODIES_PER_GENERATOR:,} bodies each, "
                  + (f"{corpus_size} corpus templates" if corpus_directory
                     else "generated requests only (OPENRTB_CORPUS unset)"))
            if arguments.profile_after:
                print(f"profile now: pid {bidder.pid}", flush=True)
                time.sleep(arguments.profile_after)
            rates = ([float(rate) for rate in arguments.rates.split(",")]
                     if arguments.find_max else [arguments.rate])
            best: StepResult | None = None
            for rate in rates:
                print(flush=True)
                step = run_step(bidder, generators, rate=rate, seconds=arguments.seconds,
                                warmup=arguments.warmup, redis_url=arguments.redis_url,
                                nats_pid=private_nats.pid)
                report(step)
                if not arguments.find_max:
                    break
                if step.errors or not step.p99_ms <= arguments.p99_limit_ms:  # nan: none answered
                    print(f"-> stop: p99 {step.p99_ms:.2f} ms, {step.errors} errors")
                    break
                best = step
                time.sleep(1.0)
            if arguments.find_max:
                print()
                print(f"highest offered rate with p99 under {arguments.p99_limit_ms:g} ms and "
                      "no errors: " + (f"{best.rate:,.0f} requests/s (p99 {best.p99_ms:.2f} "
                                       "ms)" if best else "none of the rates tried"))
        finally:
            for _, pipe in generators:
                with contextlib.suppress(OSError):
                    pipe.send(("stop",))
            for process, _ in generators:
                stop_process(process)
            for member in bidder.members if bidder is not None else ():
                stop_process(member.process)
            flush_redis(arguments.redis_url)
            if private_nats is not None:
                stop_process(private_nats)


if __name__ == "__main__":
    main()
