"""`manage.py ingest_consumer` as ops run it: its own process between NATS and PostgreSQL."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from django.db import connection

from campaign_express.backends.nats_bus import NatsBus
from loyalty.models import LedgerEntry
from tests.campaign_express.platform import ROOT, PrivateNats, free_port, wait_for_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.nats, pytest.mark.postgres]


def environment(tmp_path, **extra: str) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("CAMPAIGN_EXPRESS__")
               and key not in ("NATS_URL", "DJANGO_SETTINGS_MODULE")}
    environ.update({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path / "data"), **extra})
    return environ


def test_the_command_awards_published_purchases_and_stops_on_sigterm(tmp_path, program):
    assert connection.vendor == "postgresql", "set DATABASE_URL to a PostgreSQL database"
    settings = connection.settings_dict
    database_url = (f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/"
                    f"{settings['NAME']}")  # the test database, where `program` committed
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    metrics_port = free_port()
    log = (tmp_path / "consumer.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "ingest_consumer", "--metrics-port", str(metrics_port)],
        cwd=ROOT, env=environment(tmp_path, NATS_URL=f"nats://127.0.0.1:{nats.port}",
                                  DATABASE_URL=database_url),
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(metrics_port, 30)

        async def publish() -> None:
            bus = NatsBus(f"nats://127.0.0.1:{nats.port}")
            await bus.connect()
            await bus.stream_ensure("INGEST", ("ingest.>",))
            await bus.publish("ingest.pos.purchase", json.dumps({
                "event_id": "e-1", "user_id": "u-1",
                "payload": {"program": program.pk, "amount": "12.50"}}).encode())
            await bus.close()

        asyncio.run(publish())
        deadline = time.monotonic() + 30
        while not LedgerEntry.objects.exists():
            assert time.monotonic() < deadline, (tmp_path / "consumer.log").read_text()
            time.sleep(0.2)
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

        assert list(LedgerEntry.objects.values_list("transaction_id", "points", "channel")) == [
            ("e-1", 13, "pos")]
        assert 'loyalty_ingest_messages_total{outcome="awarded"} 1.0' in metrics
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        nats.stop()


def test_the_command_without_nats_says_what_is_missing(tmp_path):
    result = subprocess.run([sys.executable, "manage.py", "ingest_consumer"], cwd=ROOT,
                            env=environment(tmp_path), capture_output=True, text=True,
                            timeout=60)

    assert result.returncode == 1
    assert "NATS_URL is not set" in result.stderr
