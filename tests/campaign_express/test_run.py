"""`manage.py run`, the embedded platform, as a user starts it."""

import asyncio
import dataclasses
import json
import re

import httpx
import pytest
import uvicorn

from bidding.app import BidderApp
from bidding.service import BidderService
from campaign_express.asgi import application as web
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import MemoryStore
from campaign_express.management.commands.run import embedded_public_url, uvicorn_options
from campaign_express.router import PlatformRouter
from tests.bidding.bidder_fixtures import broad_campaigns, config, fixture, snapshot
from tests.campaign_express.platform import ROOT, free_port, running_platform

BID_REQUEST = (ROOT / "docs" / "examples" / "bid-request.json").read_bytes()


def _bid(base: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/bid", content=BID_REQUEST,
                      headers={"content-type": "application/json"})


@pytest.mark.slow
def test_after_a_restart_the_embedded_bidder_serves_the_saved_config(tmp_path):
    """The in-process bus starts empty and every saved change is already published: the
    command publishes the snapshot again before serving."""
    with running_platform(tmp_path, demo=True) as base:
        assert _bid(base).status_code == 200

    with running_platform(tmp_path, demo=True) as base:
        ready = httpx.get(f"{base}/ready")
        bid = _bid(base)

    published = re.search(r"^Config snapshot (\d+) published\.$",
                          (tmp_path / "platform.log").read_text(), re.MULTILINE)
    assert published is not None
    assert (ready.status_code, ready.json()["status"], ready.json()["snapshot_version"]) == (
        200, "ready", int(published.group(1)))
    assert bid.status_code == 200, bid.text
    assert bid.json()["seatbid"][0]["bid"][0]["adomain"] == ["northwindcoffee.example"]


def test_the_public_url_left_at_its_default_follows_the_port_served(tmp_path):
    assert embedded_public_url(config(tmp_path), host="0.0.0.0", port=8000) == (
        "http://127.0.0.1:8000")
    assert embedded_public_url(config(tmp_path), host="192.0.2.7", port=8080) == (
        "http://192.0.2.7:8080")
    assert embedded_public_url(config(tmp_path), host="::1", port=8000) == "http://[::1]:8000"


def test_a_public_url_set_by_the_operator_is_kept(tmp_path):
    chosen = dataclasses.replace(config(tmp_path), public_url="https://ads.example")

    assert embedded_public_url(chosen, host="0.0.0.0", port=8000) == "https://ads.example"


@pytest.mark.slow
def test_notice_urls_in_bids_name_the_port_the_platform_serves(tmp_path):
    with running_platform(tmp_path, demo=True) as base:  # a free port, not 8080
        bid = _bid(base).json()["seatbid"][0]["bid"][0]

    assert bid["nurl"].startswith(f"{base}/v1/notice/win?")
    assert bid["burl"].startswith(f"{base}/v1/notice/billing?")


async def bid_through_embedded_uvicorn(tmp_path, *, trusted_proxies: tuple[str, ...],
                                       forwarded_for: str) -> int:
    """The status of a bid on the exchange `private` (IP allow-list 10.0.0.0/8), sent from
    127.0.0.1 with `X-Forwarded-For`, to the platform router served by uvicorn as `manage.py
    run` serves it."""
    settings = dataclasses.replace(config(tmp_path), trusted_proxies=trusted_proxies)
    service = BidderService(config=settings, bus=InProcessBus(), store=MemoryStore())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        PlatformRouter(web=web, bidder=BidderApp(service)),
        **{**uvicorn_options(settings, host="127.0.0.1", port=port), "log_level": "warning"}))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn stopped"
            await asyncio.sleep(0.02)
        service.install(snapshot(*broad_campaigns()))
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"http://127.0.0.1:{port}/v1/bid/private",
                content=json.dumps(fixture("banner-site-2.6.json")),
                headers={"content-type": "application/json", "x-forwarded-for": forwarded_for})
    finally:
        server.should_exit = True
        await serving
    return response.status_code


@pytest.mark.slow
async def test_embedded_a_forwarded_address_from_an_untrusted_peer_does_not_pass_an_ip_allow_list(
        tmp_path):
    assert await bid_through_embedded_uvicorn(
        tmp_path, trusted_proxies=(), forwarded_for="10.1.2.3") == 403


@pytest.mark.slow
async def test_embedded_a_trusted_proxy_forwards_the_exchange_address_as_the_bidder_reads_it(
        tmp_path):
    """Through a trusted proxy the right-most untrusted hop is the caller, as in
    `bidding.gateway.caller_address`; the hops before it are the caller's own word."""
    assert await bid_through_embedded_uvicorn(
        tmp_path, trusted_proxies=("127.0.0.5/8",), forwarded_for="10.1.2.3") == 200
    assert await bid_through_embedded_uvicorn(
        tmp_path, trusted_proxies=("127.0.0.5/8",),
        forwarded_for="10.1.2.3, 203.0.113.9") == 403
