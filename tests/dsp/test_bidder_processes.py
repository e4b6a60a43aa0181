"""A partner's QPS limit holds across two real bidder processes (`python -m bidding`) sharing
one Redis: the snapshot reaches both over a nats-server of the test's own, the partner is a
real local HTTP server, and the bid requests go to both bidders over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from bidding.snapshot import Snapshot, publish
from campaign_express.backends.nats_bus import NatsBus
from dsp.partners import PartnerEntry
from tests.bidding.bidder_fixtures import EXCHANGES, campaign, creative, fixture
from tests.campaign_express.platform import ROOT, PrivateNats, free_port
from tests.dsp.partner_servers import partner_server

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.nats]

QPS_LIMIT = 5
REQUESTS = 40


@dataclass
class Bidder:
    process: subprocess.Popen[bytes]
    http_port: int
    metrics_port: int
    log_path: Path


def bidder_start(*, nats_url: str, redis_url: str, data_dir: Path) -> Bidder:
    http_port, metrics_port = free_port(), free_port()
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CAMPAIGN_EXPRESS__")}
    environ.update({
        "CAMPAIGN_EXPRESS__API__HOST": "127.0.0.1",
        "CAMPAIGN_EXPRESS__API__HTTP_PORT": str(http_port),
        "CAMPAIGN_EXPRESS__API__GRPC_PORT": str(free_port()),
        "CAMPAIGN_EXPRESS__METRICS__PORT": str(metrics_port),
        "CAMPAIGN_EXPRESS__SECRET_KEY": secrets.token_urlsafe(32),
        "CAMPAIGN_EXPRESS__DATA_DIR": str(data_dir),
        "CAMPAIGN_EXPRESS__LOG": "warning",
        "CAMPAIGN_EXPRESS__DSP__ENABLED": "true",
        "REDIS_URL": redis_url,
        "NATS_URL": nats_url,
    })
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "bidder.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bidding"], cwd=ROOT, env=environ,
                                   stdout=log, stderr=subprocess.STDOUT)
    return Bidder(process, http_port, metrics_port, log_path)


def bidder_wait_ready(bidder: Bidder, *, version: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if bidder.process.poll() is not None:
            pytest.fail(f"the bidder exited with {bidder.process.returncode}:\n"
                        + bidder.log_path.read_text()[-3000:])
        try:
            url = f"http://127.0.0.1:{bidder.http_port}/ready"
            with urllib.request.urlopen(url, timeout=1) as response:
                if json.loads(response.read())["snapshot_version"] == version:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail("the bidder was not ready:\n" + bidder.log_path.read_text()[-3000:])


def bidder_dsp_counts(bidder: Bidder) -> dict[str, float]:
    """The bidder's own counts of partner calls, made and skipped (by reason)."""
    url = f"http://127.0.0.1:{bidder.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith(("dsp_requests_total", "dsp_skipped_total", "dsp_timeouts_total",
                            "dsp_errors_total")):
            name, _, value = line.rpartition(" ")
            counts[name] = float(value)
    return counts


def bidder_stop(bidder: Bidder) -> None:
    if bidder.process.poll() is None:
        os.kill(bidder.process.pid, signal.SIGTERM)
        try:
            bidder.process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(bidder.process.pid, signal.SIGKILL)
            bidder.process.wait()


async def snapshot_publish(nats_url: str, snapshot: Snapshot) -> None:
    bus = NatsBus(nats_url, timeout=10.0)
    await bus.connect()
    try:
        await publish(bus, snapshot)
    finally:
        await bus.close()


def bid_post(port: int, body: bytes) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/bid", data=body,
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def redis_keys_delete(redis_url: str, *patterns: str) -> None:
    """Only the keys of this test's own partner and campaign: the database is shared."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        for pattern in patterns:
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
    finally:
        client.close()


def test_qps_limit_holds_across_two_bidder_processes(tmp_path, redis_url: str) -> None:
    # Ids no other test uses: the limiter's and the budget's keys carry them.
    partner_id = random.randrange(10**6, 10**9)
    campaign_id = random.randrange(10**6, 10**9)
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    nats_url = f"nats://127.0.0.1:{nats.port}"
    bidders: list[Bidder] = []
    try:
        # The partner never bids: our campaign answers every request, so every answer is 200.
        with partner_server(lambda request: (204, None)) as partner:
            snapshot = Snapshot(
                version=1, created_at="2026-11-27T00:00:00Z",
                campaigns=(campaign(campaign_id, creative(campaign_id, "banner")),),
                exchanges=EXCHANGES,
                dsp_partners=(PartnerEntry(id=partner_id, name="Limited", seat="seat-limited",
                                           endpoint_url=partner.url, qps_limit=QPS_LIMIT,
                                           timeout_ms=1000),))
            asyncio.run(snapshot_publish(nats_url, snapshot))
            bidders = [bidder_start(nats_url=nats_url, redis_url=redis_url,
                                    data_dir=tmp_path / f"bidder-{number}")
                       for number in range(2)]
            for bidder in bidders:
                bidder_wait_ready(bidder, version=1)
            # Time enough that no partner call is cut off on a busy machine: every admitted
            # call reaches the partner.
            body = json.dumps({**fixture("banner-site-2.6.json"), "tmax": 2000}).encode()
            ports = [bidders[number % 2].http_port for number in range(REQUESTS)]
            with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
                # All requests inside one limiter second: start just after a second begins.
                time.sleep(1.02 - time.time() % 1)
                started = time.time()
                statuses = list(pool.map(lambda port: bid_post(port, body), ports))
                finished = time.time()
            received = len(partner.requests)
            counts = [bidder_dsp_counts(bidder) for bidder in bidders]
    finally:
        for bidder in bidders:
            bidder_stop(bidder)
        nats.stop()
        redis_keys_delete(redis_url, f"dsp:{{p{partner_id}}}*", f"budget:{{c{campaign_id}}}*",
                          f"cap:*:c{campaign_id}")

    assert int(started) == int(finished), "the requests spread over two limiter seconds"
    assert statuses == [200] * REQUESTS
    assert received == QPS_LIMIT, counts
    sent = 'dsp_requests_total{partner="seat-limited"}'
    limited = 'dsp_skipped_total{partner="seat-limited",reason="qps_limit"}'
    assert sum(count.get(sent, 0) for count in counts) == QPS_LIMIT, counts
    assert sum(count.get(limited, 0) for count in counts) == REQUESTS - QPS_LIMIT, counts
    # Each bidder met the shared limit: both were refused calls the other had used up.
    assert all(count.get(limited, 0) > 0 for count in counts), counts
