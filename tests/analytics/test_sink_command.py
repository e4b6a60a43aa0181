"""`manage.py analytics_sink` as ops run it: a process of its own between NATS and ClickHouse."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from analytics.clickhouse import ClickHouseBackend
from analytics.events import Event, EventType
from analytics.migrate import migrations_apply
from analytics.pipeline import EventBuffer, Publisher
from campaign_express.backends.nats_bus import NatsBus
from tests.campaign_express.platform import ROOT, PrivateNats, free_port, wait_for_port

pytestmark = [pytest.mark.nats, pytest.mark.clickhouse]


def test_the_sink_command_inserts_published_events_and_stops_on_sigterm(
        clickhouse_url: str, tmp_path: Path) -> None:
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    database = f"test_{uuid.uuid4().hex}"
    url = urlsplit(clickhouse_url)._replace(path=f"/{database}").geturl()
    backend = ClickHouseBackend(url)
    migrations_apply(backend=backend, retention_days=90)
    metrics_port = free_port()
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("CAMPAIGN_EXPRESS__")}
    environ.update({"NATS_URL": f"nats://127.0.0.1:{nats.port}", "CLICKHOUSE_URL": url,
                    "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path / "data"),
                    "CAMPAIGN_EXPRESS__ANALYTICS__SINK_INTERVAL_MS": "200"})
    log = (tmp_path / "sink.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "analytics_sink", "--metrics-port", str(metrics_port)],
        cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    events = [Event(event_type=EventType.CLICK, node="web-1", campaign_id="3",
                    request_id=f"r{number}") for number in range(25)]
    try:
        wait_for_port(metrics_port, 30)

        async def publish() -> None:
            bus = NatsBus(f"nats://127.0.0.1:{nats.port}")
            await bus.connect()
            buffer = EventBuffer()
            for event in events:
                buffer.emit(event)
            assert await Publisher(buffer=buffer, bus=bus).publish_pending()
            await bus.close()

        asyncio.run(publish())
        deadline = time.monotonic() + 30
        while backend.query("SELECT count() FROM analytics_events FINAL")[0][0] < 25:
            assert time.monotonic() < deadline, (tmp_path / "sink.log").read_text()
            time.sleep(0.2)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

        assert backend.query("SELECT count(), uniqExact(event_id) FROM analytics_events FINAL "
                             "WHERE event_type = 'click'") == [(25, 25)]
        assert "analytics_sink_inserted_total 25.0" in metrics
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        nats.stop()
        backend.execute(f"DROP DATABASE IF EXISTS {database}")
        backend.close()


def test_the_sink_command_without_nats_says_the_platform_runs_it(tmp_path: Path) -> None:
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("CAMPAIGN_EXPRESS__") and key != "NATS_URL"}
    environ["CAMPAIGN_EXPRESS__DATA_DIR"] = str(tmp_path)
    result = subprocess.run([sys.executable, "manage.py", "analytics_sink"], cwd=ROOT,
                            env=environ, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert "NATS_URL is not set" in result.stderr
