"""Embedded mode's ASGI router: `/ready` answers for Django and the bidder together."""

import httpx
import pytest

from bidding.app import BidderApp
from bidding.service import BidderService
from campaign_express.asgi import application as web
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import MemoryStore
from campaign_express.platform import analytics_close
from campaign_express.router import PlatformRouter
from tests.bidding.bidder_fixtures import broad_campaigns, config, snapshot

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def service(tmp_path):
    """A started bidder: the shipped model loaded, no snapshot yet."""
    service = BidderService(config=config(tmp_path), bus=InProcessBus(), store=MemoryStore())
    await service.start()
    yield service
    await service.stop()
    analytics_close()


async def get_ready(service: BidderService) -> httpx.Response:
    router = PlatformRouter(web=web, bidder=BidderApp(service))
    transport = httpx.ASGITransport(app=router, client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
        return await http.get("/ready")


async def test_embedded_ready_is_503_until_the_bidder_holds_a_snapshot(service):
    response = await get_ready(service)

    body = response.json()
    assert response.status_code == 503
    assert (body["status"], body["snapshot_version"], body["campaigns"]) == (
        "not ready", None, 0)
    assert body["backends"]["database"]["ok"] is True
    assert body["model"] == service.runtime.serving()


async def test_embedded_ready_shows_the_served_snapshot_version_and_model(service):
    service.install(snapshot(*broad_campaigns(), version=7))

    response = await get_ready(service)

    body = response.json()
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert (body["status"], body["snapshot_version"], body["campaigns"]) == ("ready", 7, 3)
    assert body["model"] == service.runtime.serving()
    assert body["model"]["active"] == "1"
    assert set(body["backends"]) == {"database", "store", "bus", "analytics", "tasks"}
