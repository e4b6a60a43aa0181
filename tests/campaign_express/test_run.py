"""`manage.py run`, the embedded platform, as a user starts it."""

import re

import httpx
import pytest

from tests.campaign_express.platform import ROOT, running_platform

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
