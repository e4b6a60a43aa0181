import json
import re
import time
from datetime import UTC, datetime

import grpc
import httpx
import pytest

from campaign_express.platform import analytics_close
from tests.campaign_express.platform import (
    ROOT,
    free_port,
    private_postgres,
    private_redis,
    running_platform,
)

pytestmark = pytest.mark.django_db


def test_health_and_live_answer(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/live").json() == {"status": "alive"}


@pytest.fixture
def analytics_closed_after():
    yield
    analytics_close()


def test_ready_lists_every_backend_and_is_ready_with_a_database(client, analytics_closed_after):
    response = client.get("/ready")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ready"
    assert set(body["backends"]) == {"database", "store", "bus", "analytics", "tasks"}
    assert body["backends"]["database"]["ok"] is True
    analytics = body["backends"]["analytics"]
    assert (analytics["kind"], analytics["ok"]) == ("chdb", True)


def _grpc_bid(port: int, body: bytes) -> tuple[int, bytes]:
    from bidding import grpc_stubs

    messages, services = grpc_stubs.load()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = services.BiddingServiceStub(channel).ProcessBid(
            messages.BidRequest(openrtb=body), timeout=10)
    return response.status, response.body


def _demo_password(log: str, username: str) -> str:
    match = re.search(rf"\b{username}\s+password: (\S+)", log)
    assert match is not None, log[-2000:]
    return match.group(1)


@pytest.mark.slow
def test_embedded_platform_boots_with_demo_data_and_serves_admin_api_and_docs(tmp_path):
    grpc_port = free_port()
    with running_platform(tmp_path, demo=True, grpc_port=grpc_port) as base:
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        ready = httpx.get(f"{base}/ready")
        assert ready.status_code == 200
        kinds = {name: state["kind"] for name, state in ready.json()["backends"].items()}
        assert kinds == {"database": "sqlite", "store": "in-process", "bus": "in-process",
                         "analytics": "chdb", "tasks": "in-process"}
        assert all(state["ok"] for state in ready.json()["backends"].values()), ready.json()
        assert "Log in" in httpx.get(f"{base}/admin/login/").text
        assert httpx.get(f"{base}/api/docs/").status_code == 200
        assert httpx.get(f"{base}/api/v1/campaigns/").status_code == 401
        sample = (ROOT / "docs" / "examples" / "bid-request.json").read_bytes()
        bid = httpx.post(f"{base}/v1/bid", content=sample,
                         headers={"content-type": "application/json"})
        assert bid.status_code == 200, bid.text
        assert bid.json()["seatbid"][0]["bid"][0]["adomain"] == ["northwindcoffee.example"]
        status, body = _grpc_bid(grpc_port, sample)
        assert status == 200 and json.loads(body)["seatbid"][0]["bid"][0]["adomain"] == [
            "northwindcoffee.example"]
        # Both bids reach chDB through the event pipeline and show in the marketer's report.
        token = httpx.post(f"{base}/api/v1/auth/token/", data={
            "username": "marketer", "password": _demo_password(
                (tmp_path / "platform.log").read_text(), "marketer")}).json()["token"]
        today = datetime.now(UTC).date().isoformat()
        deadline = time.monotonic() + 30
        while True:
            report = httpx.get(f"{base}/api/v1/reports/campaign-performance/", params={
                "start": today, "end": today, "grain": "day", "group_by": "advertiser"},
                headers={"Authorization": f"Token {token}"})
            assert report.status_code == 200, report.text
            totals = report.json()["total"]
            if totals["bids"] == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (totals["bids"], totals["wins"]) == (2, 0)
    log = (tmp_path / "platform.log").read_text()
    assert "marketer" in log and "password:" in log
    assert (tmp_path / "campaign_express.sqlite3").exists()


@pytest.mark.slow
@pytest.mark.redis
def test_ready_reports_a_stopped_redis_in_its_body_and_stays_ready(tmp_path):
    with private_redis(tmp_path) as (port, redis), running_platform(
            tmp_path, environ={"REDIS_URL": f"redis://127.0.0.1:{port}/0"}) as base:
        before = httpx.get(f"{base}/ready").json()["backends"]["store"]
        assert (before["kind"], before["ok"]) == ("redis", True)
        redis.terminate()
        redis.wait(timeout=10)
        response = httpx.get(f"{base}/ready")
        store = response.json()["backends"]["store"]
        assert response.status_code == 200
        assert (store["kind"], store["ok"]) == ("redis", False)
        assert store["error"].startswith("StoreUnavailable")


@pytest.mark.slow
@pytest.mark.postgres
def test_ready_fails_when_the_database_stops(tmp_path):
    with private_postgres() as (port, stop_postgres), running_platform(
            tmp_path, environ={"DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/postgres"}
    ) as base:
        before = httpx.get(f"{base}/ready")
        assert before.status_code == 200
        assert before.json()["backends"]["database"]["kind"] == "postgresql"
        stop_postgres()
        after = httpx.get(f"{base}/ready", timeout=10)
        assert after.status_code == 503
        assert after.json()["status"] == "not ready"
        assert after.json()["backends"]["database"]["ok"] is False
        assert httpx.get(f"{base}/health").status_code == 200
