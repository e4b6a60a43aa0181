"""A native impression whose required assets a creative cannot fill gets no bid from it, and
no budget is held for it."""

import json
import time

import pytest

from bidding.markup import native_response
from bidding.openrtb import decode_request, normalize
from tests.bidding.bidder_fixtures import campaign, client, creative, fixture, started_service


@pytest.fixture
async def service(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "native"),
                                                       pacing="accelerated"))
    yield service
    await service.stop()


def native_request(*, video_required: int) -> dict:
    """The fixture's request, asking also for a video asset (our native creative has none)."""
    request = fixture("native-site.json")
    assets = json.loads(request["imp"][0]["native"]["request"])
    assets["assets"].append({"id": 4, "required": video_required,
                             "video": {"mimes": ["video/mp4"], "minduration": 5,
                                       "maxduration": 30, "protocols": [7]}})
    request["imp"][0]["native"]["request"] = json.dumps(assets)
    return request


async def held_this_minute(service) -> bytes | None:
    return await service.store.get(f"budget:{{c1}}:held:{int(time.time() // 60)}")


async def test_a_required_asset_the_creative_cannot_fill_means_no_bid_and_no_hold(service):
    async with client(service) as http:
        refused = await http.post("/v1/bid", json=native_request(video_required=1))
        reasons = await http.post("/v1/bid/reasons", json=native_request(video_required=1))

    outcome = await service.engine.bid(
        normalize(decode_request(json.dumps(native_request(video_required=1)).encode())),
        exchange=service.engine.index.default_exchange(), received_at=time.perf_counter())

    assert refused.status_code == 204
    assert reasons.json() == {"id": "req-native", "nbr": 0}
    assert (outcome.response, outcome.scored, dict(outcome.refusals)) == (
        None, 0, {"native_assets": 1})
    assert await held_this_minute(service) is None


async def test_an_optional_asset_the_creative_cannot_fill_is_left_out_of_the_bid(service):
    async with client(service) as http:
        response = await http.post("/v1/bid", json=native_request(video_required=0))

    bid = response.json()["seatbid"][0]["bid"][0]
    assert [asset["id"] for asset in json.loads(bid["adm"])["assets"]] == [1, 2, 3]
    assert await held_this_minute(service) is not None


def test_third_party_native_markup_is_not_checked_against_the_assets():
    markup = '{"native":{"ver":"1.2","assets":[]}}'
    assert native_response(creative(11, "native", markup=markup), request_assets=[
        {"id": 4, "required": 1, "video": {}}], click_url="", impression_url="") == markup
