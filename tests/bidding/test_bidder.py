"""The bidder end to end over its ASGI app: status codes, responses, targeting, blocklists,
floors, currencies, exchanges' checks and snapshot swaps."""

import asyncio
import dataclasses
import gc
import gzip
import json
import os
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import pytest

from bidding.budget import RESERVE, user_key
from bidding.eligibility import WEEKDAYS
from bidding.engine import CAMPAIGN_NOTICE_FIELDS, NOTICE_FIELDS
from bidding.nbr import NoBid
from bidding.openrtb import decode_request, normalize
from bidding.openrtb.response import decode_response
from bidding.service import BidderService
from bidding.signing import verify
from campaign_express.backends.bus import InProcessBus
from tests.bidding.bidder_fixtures import (
    NOW,
    SECRET,
    FailsOnce,
    broad_campaigns,
    campaign,
    client,
    config,
    creative,
    fixture,
    snapshot,
    started_service,
)
from tests.bidding.test_openrtb import TCF_PURPOSES_1_TO_4_VENDOR_755


@pytest.fixture
async def service(tmp_path):
    service = await started_service(tmp_path)
    yield service
    await service.stop()


async def post(service, body, path="/v1/bid", **kwargs):
    async with client(service, kwargs.pop("client_address", "127.0.0.1")) as http:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await http.post(path, content=content, **kwargs)


async def test_a_banner_request_gets_a_complete_openrtb_bid(service):
    response = await post(service, fixture("banner-site-2.6.json"))

    assert response.status_code == 200
    assert response.headers["x-openrtb-version"] == "2.6"
    body = response.json()
    assert body["id"] == "req-banner-26"
    assert body["cur"] == "USD"
    (seatbid,) = body["seatbid"]
    assert seatbid["seat"] == "ce-seat"
    (bid,) = seatbid["bid"]
    assert (bid["impid"], bid["cid"], bid["crid"], bid["mtype"]) == ("1", "1", "11", 1)
    assert (bid["w"], bid["h"]) == (300, 250)
    assert bid["adomain"] == ["brand.example"]
    assert Decimal("0.5") <= Decimal(str(bid["price"])) <= Decimal("6")
    assert 'src="https://cdn.example/11.png"' in bid["adm"]
    for kind in ("nurl", "burl", "lurl"):
        url = urlsplit(bid[kind])
        assert url.path == f"/v1/notice/{dict(nurl='win', burl='billing', lurl='loss')[kind]}"
        query = dict(parse_qsl(url.query.replace("${", "").replace("}", ""),
                               keep_blank_values=True))
        assert verify(SECRET, url.path.rsplit("/", 1)[1], query,
                      NOTICE_FIELDS + CAMPAIGN_NOTICE_FIELDS)
        assert (query["ccur"], query["tz"]) == ("USD", "UTC")
        assert query["user"] == user_key("ce-user-123")  # consent given: caps can count
    assert "price=${AUCTION_PRICE}" in bid["burl"]
    assert "loss=${AUCTION_LOSS}" in bid["lurl"]


async def test_video_and_native_requests_get_vast_and_native_markup(service):
    video = (await post(service, fixture("video-app.json"))).json()["seatbid"][0]["bid"][0]
    native = (await post(service, fixture("native-site.json"))).json()["seatbid"][0]["bid"][0]

    assert video["mtype"] == 2 and video["adm"].startswith('<VAST version="4.0">')
    assert video["dur"] == 15
    assert native["mtype"] == 4 and json.loads(native["adm"])["ver"] == "1.2"


async def test_a_video_creative_without_sizes_fills_the_player_the_request_names(tmp_path):
    service = await started_service(tmp_path, campaign(
        1, creative(11, "video", sizes=()), base_bid_cpm=Decimal(10), max_bid_cpm=Decimal(20)))

    bid = (await post(service, fixture("video-app.json"))).json()["seatbid"][0]["bid"][0]

    assert 'width="1920" height="1080"' in bid["adm"]
    assert (bid["w"], bid["h"]) == (1920, 1080)
    await service.stop()


@pytest.mark.parametrize("body", [b"{not json", b'{"id": "x"}', b'{"id": "x", "imp": []}',
                                  b"[]", b'{"imp": [{"id": "1"}]}'])
async def test_an_unreadable_request_is_a_400_without_a_body(service, body):
    response = await post(service, body)

    assert (response.status_code, response.content) == (400, b"")


@pytest.mark.parametrize("changes", [
    {"user.data.0.segment.0.value": 5},
    {"imp.0.pmp": {"deals": [{"bidfloor": 1}]}},
    {"tmax": 120.5},
    {"cur": "USD"},
    {"imp.0.bidfloor": True},
    {"imp.0.banner.format": [None]},
    {"imp.0.id": "1\nbid=x"},
    {"id": "r1\nbid=x"},
], ids=["segment-id", "deal-without-id", "tmax-float", "cur-string", "bidfloor-bool",
        "format-null", "imp-id-newline", "id-newline"])
async def test_a_request_that_names_itself_but_breaks_the_spec_gets_nbr_2(service, changes):
    request = with_changes(fixture("banner-site-2.6.json"), changes)

    plain = await post(service, request)
    with_reason = await post(service, request, path="/v1/bid/reasons")

    assert (plain.status_code, plain.content) == (204, b"")
    assert with_reason.json() == {"id": request["id"], "nbr": 2}


async def test_a_body_over_the_limit_is_a_400(service):
    request = fixture("banner-site-2.6.json")
    request["site"]["keywords"] = "x" * 300_000

    assert (await post(service, request)).status_code == 400


async def test_a_gzipped_request_is_read_and_a_gzip_answer_given_when_asked(service):
    request = fixture("banner-site-2.6.json")
    response = await post(service, gzip.compress(json.dumps(request).encode()),
                          headers={"content-encoding": "gzip", "accept-encoding": "gzip"})

    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.json()["id"] == "req-banner-26"


async def test_no_eligible_campaign_is_a_204_or_an_nbr_body_for_exchanges_that_ask(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       countries=("FRA",)))
    request = fixture("banner-site-2.6.json")

    plain = await post(service, request)
    with_reason = await post(service, request, path="/v1/bid/reasons")

    assert (plain.status_code, plain.content) == (204, b"")
    assert with_reason.status_code == 200
    assert with_reason.json() == {"id": "req-banner-26", "nbr": 0}
    await service.stop()


async def test_too_little_time_left_is_a_no_bid_with_nbr_15(service):
    request = {**fixture("banner-site-2.6.json"), "tmax": 10}

    response = await post(service, request, path="/v1/bid/reasons")

    assert response.json() == {"id": "req-banner-26", "nbr": 15}


async def test_an_exchange_with_a_token_refuses_callers_without_it(service):
    request = fixture("banner-site-2.6.json")

    missing = await post(service, request, path="/v1/bid/secured")
    wrong = await post(service, request, path="/v1/bid/secured",
                       headers={"authorization": "Bearer nope"})
    right = await post(service, request, path="/v1/bid/secured",
                       headers={"authorization": "Bearer exchange-token"})

    assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 200)


async def test_an_exchange_with_an_ip_list_refuses_other_addresses(service):
    request = fixture("banner-site-2.6.json")

    outside = await post(service, request, path="/v1/bid/private")
    inside = await post(service, request, path="/v1/bid/private", client_address="10.1.2.3")

    assert (outside.status_code, inside.status_code) == (403, 200)


async def test_an_unknown_exchange_is_a_404(service):
    assert (await post(service, fixture("banner-site-2.6.json"),
                       path="/v1/bid/nobody")).status_code == 404


@pytest.mark.parametrize(("campaign_overrides", "creative_overrides", "request_change"), [
    ({"countries": ("FRA",)}, {}, {}),
    ({"device_types": ("phone",)}, {}, {}),
    ({"operating_systems": ("ios",)}, {}, {}),
    ({"regions": ("DE-BE",)}, {}, {}),
    ({"site_domains_allow": ("other.example",)}, {}, {}),
    ({"site_domains_block": ("news.example",)}, {}, {}),
    ({"categories": ("IAB1",)}, {}, {}),
    ({"segments": ("seg-cars",)}, {}, {}),
    ({"deal_ids": ("deal-1",)}, {}, {}),
    ({"loyalty_tiers": ("gold",)}, {}, {}),
    ({"start_at": 0, "end_at": 1}, {}, {}),
    ({}, {"categories": ("IAB25-3",)}, {}),
    ({}, {"adomain": "competitor.example"}, {}),
    ({}, {"attributes": (3,)}, {}),
    ({}, {"sizes": ((160, 600),)}, {}),
    ({}, {"asset_url": "http://cdn.example/insecure.png", "is_secure": False},
     {"secure": 1}),
    ({}, {}, {"bidfloor": 7.0}),
    ({}, {}, {"bidfloor": 5.6, "bidfloorcur": "GBP"}),
])
async def test_each_targeting_rule_blocklist_and_floor_refuses_the_bid(
        tmp_path, campaign_overrides, creative_overrides, request_change):
    """The request bids on the unchanged campaign; one rule changed makes it a no-bid."""
    request = fixture("banner-site-2.6.json")
    baseline = await started_service(tmp_path, campaign(1, creative(11, "banner")))
    assert (await post(baseline, request)).status_code == 200
    await baseline.stop()

    changed = await started_service(tmp_path, campaign(
        1, creative(11, "banner", **creative_overrides), **campaign_overrides))
    request["imp"][0].update(request_change)

    assert (await post(changed, request)).status_code == 204
    await changed.stop()


async def engine_outcome(service, request: dict, *, now: float | None = None):
    """The engine's answer to ``request`` on the default exchange, with its refusals."""
    view = normalize(decode_request(json.dumps(request).encode()))
    return await service.engine.bid(view, exchange=service.engine.index.default_exchange(),
                                    received_at=time.perf_counter(), now=now)


def with_changes(request: dict, changes: dict) -> dict:
    """``request`` with each dotted path ("imp.0.video.mimes") set to its value, or removed
    when the value is None."""
    for path, value in changes.items():
        *parents, last = [int(key) if key.isdigit() else key for key in path.split(".")]
        node = request
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(last)
        else:
            node[last] = value
    return request


MEDIA_FIXTURES = {"banner": "banner-site-2.6.json", "video": "video-app.json",
                  "native": "native-site.json"}
SCRIPT_TAG = '<script src="https://tags.brand.example/ad.js"></script>'


@pytest.mark.parametrize(("media", "campaign_overrides", "creative_overrides", "changes",
                          "reason"), [
    ("video", {"app_bundles_allow": ("com.example.other",)}, {}, {}, "app_not_allowed"),
    ("video", {"app_bundles_block": ("com.example.streaming",)}, {}, {}, "app_blocked"),
    ("banner", {}, {"categories": ("IAB8-1",)}, {"acat": ["IAB3", "IAB12"]}, "acat"),
    ("banner", {}, {"app_bundle": "com.shop.app"}, {"bapp": ["com.shop.app"]}, "bapp"),
    ("banner", {}, {}, {"imp.0.banner.btype": [2]}, "btype"),
    ("banner", {}, {"markup": SCRIPT_TAG}, {"imp.0.banner.btype": [3]}, "btype"),
    ("video", {}, {"attributes": (6,)}, {}, "battr"),
    ("native", {}, {"attributes": (9,)}, {}, "battr"),
    ("video", {}, {}, {"imp.0.video.mimes": ["video/webm"]}, None),
    ("video", {}, {}, {"imp.0.video.minduration": 20}, "duration"),
    ("video", {}, {}, {"imp.0.video.maxduration": 10}, "duration"),
    ("video", {}, {}, {"imp.0.video.minduration": None, "imp.0.video.maxduration": None,
                       "imp.0.video.rqddurs": [6, 30]}, "duration"),
    ("video", {}, {}, {"imp.0.video.protocols": [2, 3]}, None),
    ("banner", {}, {}, {"wseat": ["another-seat"]}, None),
    ("banner", {}, {}, {"bseat": ["ce-seat"]}, None),
], ids=["app-allow", "app-block", "acat", "bapp", "btype-xhtml", "btype-script", "battr-video",
        "battr-native", "mimes", "minduration", "maxduration", "rqddurs", "protocols", "wseat",
        "bseat"])
async def test_each_media_rule_app_list_and_seat_rule_refuses_the_bid_for_its_reason(
        tmp_path, media, campaign_overrides, creative_overrides, changes, reason):
    """The fixture bids on the plain campaign; the one change is refused for its own reason
    and nothing else (seat rules refuse the whole request before any candidate; MIME types
    and protocols are index facets: the pair is never a candidate, and no reason counts)."""
    request = fixture(MEDIA_FIXTURES[media])
    video = {"sizes": ()} if media == "video" else {}
    money = {"base_bid_cpm": Decimal(10), "max_bid_cpm": Decimal(20)} if media == "video" else {}
    baseline = await started_service(tmp_path, campaign(1, creative(11, media, **video),
                                                        **money))
    assert (await engine_outcome(baseline, request)).response is not None
    await baseline.stop()

    service = await started_service(tmp_path, campaign(
        1, creative(11, media, **video, **creative_overrides), **money, **campaign_overrides))
    outcome = await engine_outcome(service, with_changes(request, changes))

    assert outcome.response is None
    assert set(outcome.refusals) == ({reason} if reason else set())
    assert outcome.reason == NoBid.NO_ELIGIBLE_CAMPAIGN
    await service.stop()


@pytest.mark.parametrize(("media", "sites", "apps", "reason"), [
    ("banner", ("news.example",), ("com.example.streaming",), None),
    ("video", ("news.example",), ("com.example.streaming",), None),
    ("banner", ("other.example",), ("com.example.streaming",), "site_not_allowed"),
    ("video", ("news.example",), ("com.example.other",), "app_not_allowed"),
    ("video", ("news.example",), (), "site_not_allowed"),  # the app's domain is not listed
    ("video", ("streaming.example",), (), None),  # the app publisher's domain is
    ("banner", (), ("com.example.streaming",), "app_not_allowed"),
])
async def test_a_site_allow_list_and_an_app_allow_list_each_admit_their_own_traffic(
        tmp_path, media, sites, apps, reason):
    video = {"sizes": ()} if media == "video" else {}
    service = await started_service(tmp_path, campaign(
        1, creative(11, media, **video), base_bid_cpm=Decimal(10), max_bid_cpm=Decimal(20),
        site_domains_allow=sites, app_bundles_allow=apps))

    outcome = await engine_outcome(service, fixture(MEDIA_FIXTURES[media]))

    assert (outcome.response is not None) == (reason is None)
    assert set(outcome.refusals) == ({reason} if reason else set())
    await service.stop()


@pytest.mark.parametrize(("native_request", "bids"), [
    ('{"ver":"1.2","assets":[{"id":1,"required":1,"title":{"len":"25"}}]}', True),
    ("{not json", False),
    ('[{"id":1}]', False),
    ('{"ver":"1.2","assets":[]}', False),
    ('{"ver":"1.2","assets":[{"id":1,"required":1,"img":"big"}]}', False),
    ('{"ver":"1.2","assets":[{"id":1,"title":null,"required":1}]}', False),
])
async def test_a_native_request_without_readable_assets_gets_no_bid(tmp_path, native_request,
                                                                     bids):
    service = await started_service(tmp_path, campaign(1, creative(11, "native")))
    request = fixture("native-site.json")
    request["imp"][0]["native"]["request"] = native_request

    outcome = await engine_outcome(service, request)

    assert (outcome.response is not None) == bids
    if bids:
        markup = json.loads(outcome.response.seatbid[0].bid[0].adm)
        assert len(markup["assets"][0]["title"]["text"]) <= 25
    else:
        assert set(outcome.refusals) == {"native_assets"}
    await service.stop()


async def test_with_a_vendor_id_a_consent_string_without_our_vendor_uses_no_user_data(
        tmp_path):
    """banner-site-2.6.json consents to purposes 1 to 4 and to no vendor: no user-level data
    (no user in the notice URLs) until the string also consents to vendor 755."""
    service = await started_service(tmp_path, campaign(1, creative(11, "banner")),
                                    gdpr_vendor_id=755)

    request = {**fixture("banner-site-2.6.json"), "regs": {"gdpr": 1}}
    ours = {**request, "user": {**request["user"], "consent": TCF_PURPOSES_1_TO_4_VENDOR_755}}

    users = []
    for body in (request, ours):
        bid = (await post(service, body)).json()["seatbid"][0]["bid"][0]
        users.append(dict(parse_qsl(urlsplit(bid["nurl"]).query, keep_blank_values=True))["user"])

    assert users == ["", user_key("ce-user-123")]
    await service.stop()


async def test_a_bid_for_an_app_install_names_the_app(tmp_path):
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner", app_bundle="com.shop.app")))

    outcome = await engine_outcome(service, {**fixture("banner-site-2.6.json"),
                                             "bapp": ["com.other.app"]})

    assert outcome.response.seatbid[0].bid[0].bundle == "com.shop.app"
    await service.stop()


@pytest.mark.parametrize("changes", [{}, {"acat": ["IAB8"]}, {"wseat": ["ce-seat", "other"]},
                                     {"bseat": ["other-seat"]}, {"imp.0.banner.btype": [3]}],
                         ids=["plain", "acat", "wseat", "bseat", "btype"])
async def test_allow_lists_that_include_us_and_blocklists_that_do_not_still_bid(
        tmp_path, changes):
    """acat names the creative's parent category, wseat our seat, bseat and btype others."""
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner", categories=("IAB8-1",))))

    outcome = await engine_outcome(service, with_changes(fixture("banner-site-2.6.json"), changes))

    assert outcome.response is not None
    await service.stop()


async def test_an_app_bundle_on_the_allow_list_bids(tmp_path):
    service = await started_service(tmp_path, campaign(
        2, creative(21, "video", sizes=()), app_bundles_allow=("com.example.streaming",),
        app_bundles_block=("com.example.other",), base_bid_cpm=Decimal(10),
        max_bid_cpm=Decimal(20)))

    outcome = await engine_outcome(service, fixture("video-app.json"))

    assert outcome.response is not None
    await service.stop()


async def test_dayparts_in_the_campaigns_time_zone_bid_only_in_their_hours(tmp_path):
    """Kolkata is UTC+5:30: the hour of NOW there is a daypart only read in that zone."""
    local = datetime.fromtimestamp(NOW, ZoneInfo("Asia/Kolkata"))
    day = WEEKDAYS[local.weekday()]
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), time_zone="Asia/Kolkata", dayparts={day: (local.hour,)}))
    request = fixture("banner-site-2.6.json")
    hour_start = NOW - local.minute * 60 - local.second

    inside = await engine_outcome(service, request, now=hour_start + 60)
    before = await engine_outcome(service, request, now=hour_start - 60)
    after = await engine_outcome(service, request, now=hour_start + 3600 + 60)

    assert inside.response is not None
    for outside in (before, after):
        assert outside.response is None
        assert set(outside.refusals) == {"schedule"}
    await service.stop()


async def test_a_deal_campaign_bids_on_its_deal_echoing_the_deal_id_above_its_floor(tmp_path):
    """pmp-deals.json is a private auction with deal-eur (for another seat) and deal-usd
    (floor 3.10 USD): only the campaign on deal-usd may bid, the open one may not."""
    tall = creative(11, "banner", sizes=((300, 600),))
    service = await started_service(
        tmp_path, campaign(1, tall, deal_ids=("deal-usd",)),
        campaign(2, creative(21, "banner", sizes=((300, 600),))),
        campaign(3, creative(31, "banner", sizes=((300, 600),)), deal_ids=("deal-eur",)))

    body = (await post(service, fixture("pmp-deals.json"))).json()

    (bid,) = body["seatbid"][0]["bid"]
    assert (bid["dealid"], bid["cid"]) == ("deal-usd", "1")
    price = Decimal(str(bid["price"]))
    floor = Decimal("3.1") if body["cur"] == "USD" else Decimal("3.1") * Decimal("0.92")
    assert price >= floor
    await service.stop()


async def test_the_response_currency_is_one_the_request_allows(service):
    request = {**fixture("banner-site-2.6.json"), "cur": ["EUR"]}
    request["imp"][0]["bidfloor"] = 0.1

    body = (await post(service, request)).json()

    assert body["cur"] == "EUR"


async def test_a_newer_snapshot_replaces_the_served_one_and_an_older_one_is_ignored(service):
    request = fixture("banner-site-2.6.json")
    service.install(snapshot(campaign(5, creative(55, "banner")), version=7))
    first = (await post(service, request)).json()["seatbid"][0]["bid"][0]["cid"]
    service.install(snapshot(*broad_campaigns(), version=3))
    second = (await post(service, request)).json()["seatbid"][0]["bid"][0]["cid"]

    assert (first, second) == ("5", "5")
    assert service.state()["snapshot_version"] == 7


async def test_a_served_snapshot_is_out_of_the_collectors_sight(service):
    """A full collection walks every tracked object; the served index's hundreds of
    thousands of objects (at 10,000 campaigns) are frozen out of it."""
    service.install(snapshot(campaign(6, creative(66, "banner")), version=8))
    index = service.engine.index

    assert gc.get_freeze_count() > 0
    assert not any(tracked is index for tracked in gc.get_objects())
    assert (await post(service, fixture("banner-site-2.6.json"))).json()[
        "seatbid"][0]["bid"][0]["cid"] == "6"


async def test_ready_says_what_is_served(service):
    async with client(service) as http:
        response = await http.get("/ready")

    assert response.status_code == 200
    assert response.json()["snapshot_version"] == 1
    assert response.json()["model"]["active"] == "1"


CORPUS = os.environ.get("OPENRTB_CORPUS", "")


def corpus_requests() -> list[Path]:
    if not CORPUS:
        return []
    return [path for path in sorted(Path(CORPUS).glob("*.json"))
            if isinstance(data := json.loads(path.read_text()), dict) and "imp" in data]


@pytest.mark.skipif(not CORPUS, reason="OPENRTB_CORPUS is not set")
async def test_every_corpus_request_gets_a_valid_answer_never_a_500(service):
    answered = {"bids": 0, "no_bids": 0}
    for path in corpus_requests():
        request = json.loads(path.read_text())
        response = await post(service, path.read_bytes())
        assert response.status_code in (200, 204), path.name
        if response.status_code == 204:
            answered["no_bids"] += 1
            continue
        body = decode_response(response.content)
        imp_ids = {str(imp["id"]) for imp in request["imp"]}
        assert body.id == str(request["id"]), path.name
        for bid in body.seatbid[0].bid:
            assert bid.impid in imp_ids and bid.price > 0 and bid.crid and bid.adm, path.name
        answered["bids"] += 1
    assert answered["bids"] >= 30, answered


async def test_an_exhausted_budget_is_a_no_bid_with_its_reason(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       daily_budget=Decimal("0.003"),
                                                       pacing="accelerated"))
    request = fixture("banner-site-2.6.json")

    answers = [await post(service, request, path="/v1/bid/reasons") for _ in range(6)]

    # Each bid costs at least half the base CPM (1.00) per thousand: at most 3 fit in 0.003.
    bids = [answer for answer in answers if "seatbid" in answer.json()]
    assert 1 <= len(bids) <= 3
    assert answers[-1].json() == {"id": "req-banner-26", "nbr": 10}
    await service.stop()


async def test_a_user_at_a_frequency_cap_gets_no_bid_and_others_still_do(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       frequency_cap_hour=1))
    request = fixture("banner-site-2.6.json")
    first = (await post(service, request)).json()["seatbid"][0]["bid"][0]
    await service.engine.ledger.count_impression(user=user_key("ce-user-123"), campaign_id=1)

    capped = await post(service, request)
    someone_else = await post(service, {**request, "user": {
        "buyeruid": "another-user", "consent": request["user"]["consent"]}})

    assert first["cid"] == "1"
    assert capped.status_code == 204
    assert someone_else.status_code == 200
    await service.stop()


async def test_one_response_never_bids_a_campaign_past_its_cap(tmp_path):
    service = await started_service(
        tmp_path, campaign(1, creative(11, "banner"), frequency_cap_lifetime=1),
        campaign(2, creative(21, "banner"), base_bid_cpm=Decimal("0.6"),
                 max_bid_cpm=Decimal("0.7")))
    request = fixture("banner-site-2.6.json")
    request["imp"].append({**request["imp"][0], "id": "2"})

    bids = (await post(service, request)).json()["seatbid"][0]["bid"]

    assert sorted(bid["cid"] for bid in bids) == ["1", "2"]  # 1's one impression is held
    await service.stop()


async def test_two_requests_for_one_user_at_once_never_both_take_the_last_impression(
        tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       frequency_cap_day=1))
    request = fixture("banner-site-2.6.json")

    answers = await asyncio.gather(*(post(service, {**request, "id": f"r{number}"})
                                     for number in range(4)))

    assert sorted(answer.status_code for answer in answers) == [200, 204, 204, 204]
    await service.stop()


async def test_a_loss_notice_gives_the_users_capped_impression_back(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       frequency_cap_lifetime=1))
    request = fixture("banner-site-2.6.json")
    bid = (await post(service, request)).json()["seatbid"][0]["bid"][0]
    held = await post(service, request)

    async with client(service) as http:
        loss = await http.get(bid["lurl"].replace("${AUCTION_LOSS}", "102").replace(
            "${AUCTION_PRICE}", ""))
    after_loss = await post(service, request)

    assert held.status_code == 204  # the first bid holds the only impression
    assert loss.status_code == 204
    assert after_loss.status_code == 200
    await service.stop()


async def test_a_cap_hold_taken_beside_a_failed_budget_hold_is_given_back(tmp_path):
    """The request fails closed; the user's only impression, held beside the failed budget
    hold, is not left taken for minutes."""
    store = FailsOnce()
    service = await started_service(
        tmp_path, campaign(1, creative(11, "banner"), frequency_cap_lifetime=1), store=store)
    store.fail(RESERVE, ran=False)  # a Redis blip before the budget hold runs
    service.engine.settings = dataclasses.replace(service.engine.settings,
                                                  store_retry_seconds=0.0)  # a blip, gone
    request = fixture("banner-site-2.6.json")

    failed = await post(service, request)
    await asyncio.sleep(0.01)  # the holds go back once the answer is on its way
    after = await post(service, {**request, "id": "r2"})

    assert (failed.status_code, after.status_code) == (204, 200)
    await service.stop()


async def test_a_capped_request_says_nbr_9_when_nothing_else_may_bid(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       frequency_cap_day=1))
    request = fixture("banner-site-2.6.json")
    await service.engine.ledger.count_impression(user=user_key("ce-user-123"), campaign_id=1)

    answer = await post(service, request, path="/v1/bid/reasons")

    assert answer.json() == {"id": "req-banner-26", "nbr": 9}
    await service.stop()


async def test_a_capped_best_choice_gives_its_hold_back_and_the_next_one_bids(tmp_path):
    service = await started_service(
        tmp_path,
        campaign(1, creative(11, "banner"), frequency_cap_hour=1,
                 base_bid_cpm=Decimal(5), max_bid_cpm=Decimal(9)),
        campaign(2, creative(21, "banner")))
    ledger = service.engine.ledger
    await ledger.count_impression(user=user_key("ce-user-123"), campaign_id=1)

    answer = await post(service, fixture("banner-site-2.6.json"))

    assert answer.json()["seatbid"][0]["bid"][0]["cid"] == "2"
    minute = int(time.time() // 60)
    held = await service.store.get_many([f"budget:{{c1}}:held:{minute - back}"
                                         for back in (0, 1)])
    assert [int(value or 0) for value in held] == [0, 0]  # taken, then given back
    await service.stop()


async def test_capped_campaigns_without_a_countable_user_say_why(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       frequency_cap_day=5))
    request = fixture("banner-site-2.6.json")
    no_user = {key: value for key, value in request.items() if key != "user"}

    unmatched = await post(service, no_user, path="/v1/bid/reasons")
    no_consent = await post(service, {**request, "regs": {"coppa": 1}}, path="/v1/bid/reasons")

    assert unmatched.json() == {"id": "req-banner-26", "nbr": 8}
    assert no_consent.json() == {"id": "req-banner-26", "nbr": 0}
    await service.stop()


async def test_capped_campaigns_do_not_bid_without_a_user_they_may_count(tmp_path):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       frequency_cap_day=5))
    request = {**fixture("banner-site-2.6.json"), "regs": {"coppa": 1}}

    assert (await post(service, request)).status_code == 204
    await service.stop()


@pytest.mark.redis
async def test_without_redis_campaigns_fail_closed_and_bidding_resumes_when_it_returns(
        tmp_path):
    from campaign_express.backends.store import RedisStore
    from tests.campaign_express.platform import private_redis

    request = fixture("banner-site-2.6.json")
    with private_redis(tmp_path) as (port, redis_process):
        service = BidderService(config=config(tmp_path), bus=InProcessBus(),
                                store=RedisStore(f"redis://127.0.0.1:{port}/0"))
        service.engine.settings = dataclasses.replace(service.engine.settings,
                                                      store_retry_seconds=0.2)
        await service.start()
        service.install(snapshot(*broad_campaigns()))
        assert (await post(service, request)).status_code == 200
        redis_process.terminate()
        redis_process.wait(10)

        down = await post(service, request, path="/v1/bid/reasons")
        assert down.json() == {"id": "req-banner-26", "nbr": 1}

    with private_redis(tmp_path, port):
        await asyncio.sleep(0.3)
        assert (await post(service, request)).status_code == 200
    await service.stop()


async def test_a_video_price_per_second_floor_comes_before_the_imp_floor(tmp_path):
    """video-app.json: imp floor 12 EUR, but 0.25 EUR a second for a 15 s creative is 3.75."""
    service = await started_service(tmp_path, campaign(
        2, creative(21, "video", sizes=()), base_bid_cpm=Decimal(4), max_bid_cpm=Decimal(5)))

    bid = (await post(service, fixture("video-app.json"))).json()["seatbid"][0]["bid"][0]

    assert Decimal(str(bid["price"])) >= Decimal("3.75")
    await service.stop()


@pytest.mark.parametrize(("duration_floors", "lowest_price"), [
    ([{"maxdur": 10, "bidfloor": 50}, {"mindur": 11, "maxdur": 30, "bidfloor": 16}], "16"),
    ([{"mindur": 15, "maxdur": 15, "bidfloor": 16}], "16"),  # both ends included
    ([{"mindur": 1, "maxdur": 30, "bidfloor": 40}], None),  # above the campaign's maximum
    ([{"mindur": 20, "bidfloor": 40}], "3.75"),  # not the creative's 15 s: per second
    ([{"bidfloor": 40}], "3.75"),  # no range at all: ignored
])
async def test_the_duration_floor_holding_the_creative_applies(tmp_path, duration_floors,
                                                               lowest_price):
    """video-app.json: a 15 s creative, 0.25 EUR a second (3.75), imp floor 12 EUR."""
    service = await started_service(tmp_path, campaign(
        2, creative(21, "video", sizes=()), currency="EUR", base_bid_cpm=Decimal(4),
        max_bid_cpm=Decimal(20)))  # bids 2 to 12 on its own: below 16
    request = with_changes(fixture("video-app.json"), {"imp.0.video.durfloors": duration_floors})

    outcome = await engine_outcome(service, request)

    if lowest_price is None:
        assert outcome.response is None and set(outcome.refusals) == {"below_floor"}
    else:
        price = outcome.response.seatbid[0].bid[0].price
        assert price >= Decimal(lowest_price)
    await service.stop()


async def test_a_deal_with_at_3_is_bid_at_exactly_its_agreed_price(tmp_path):
    """The campaign would bid at least 5 (half its base CPM); the deal's price is 4.75."""
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), deal_ids=("fixed",), base_bid_cpm=Decimal(10),
        max_bid_cpm=Decimal(12)))
    request = fixture("banner-site-2.6.json")
    request["imp"][0]["pmp"] = {"private_auction": 1, "deals": [
        {"id": "fixed", "bidfloor": 4.75, "bidfloorcur": "USD", "at": 3}]}

    bid = (await post(service, request)).json()["seatbid"][0]["bid"][0]

    assert (bid["dealid"], Decimal(str(bid["price"]))) == ("fixed", Decimal("4.75"))
    await service.stop()


async def test_a_deal_our_seat_is_not_allowed_on_is_never_echoed(tmp_path):
    """The campaign is on both deals; "fixed" admits another seat only, so the bid is on
    "open-to-all" at its floor, never on "fixed" at its lower one."""
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), deal_ids=("fixed", "open-to-all")))
    request = fixture("banner-site-2.6.json")
    request["imp"][0]["pmp"] = {"private_auction": 1, "deals": [
        {"id": "fixed", "bidfloor": 1, "wseat": ["other-seat"]},
        {"id": "open-to-all", "bidfloor": 2}]}

    bid = (await post(service, request)).json()["seatbid"][0]["bid"][0]

    assert bid["dealid"] == "open-to-all"
    assert Decimal(str(bid["price"])) >= 2
    await service.stop()


async def test_a_deal_bid_is_not_shadowed_by_a_better_open_bid_on_an_open_auction(tmp_path):
    """private_auction=0: the open campaign pays more, so it bids; the deal campaign's bid
    goes beside it for the same impression, and the exchange picks."""
    service = await started_service(
        tmp_path, campaign(1, creative(11, "banner"), deal_ids=("d1",),
                           base_bid_cpm=Decimal(1), max_bid_cpm=Decimal("1.5")),
        campaign(2, creative(21, "banner"), base_bid_cpm=Decimal(5), max_bid_cpm=Decimal(8)))
    request = fixture("banner-site-2.6.json")
    request["imp"][0]["pmp"] = {"private_auction": 0, "deals": [{"id": "d1", "bidfloor": 0.5}]}

    bids = (await post(service, request)).json()["seatbid"][0]["bid"]

    assert [(bid["impid"], bid["cid"], bid.get("dealid")) for bid in bids] == [
        ("1", "2", None), ("1", "1", "d1")]
    await service.stop()


async def test_a_better_deal_bid_goes_alone(tmp_path):
    service = await started_service(
        tmp_path, campaign(1, creative(11, "banner"), deal_ids=("d1",),
                           base_bid_cpm=Decimal(5), max_bid_cpm=Decimal(8)),
        campaign(2, creative(21, "banner"), base_bid_cpm=Decimal(1), max_bid_cpm=Decimal("1.5")))
    request = fixture("banner-site-2.6.json")
    request["imp"][0]["pmp"] = {"private_auction": 0, "deals": [{"id": "d1", "bidfloor": 0.5}]}

    (bid,) = (await post(service, request)).json()["seatbid"][0]["bid"]

    assert (bid["cid"], bid["dealid"]) == ("1", "d1")
    await service.stop()


@pytest.mark.parametrize(("deal_price", "cur", "wire"), [
    (4.23456, "EUR", Decimal("4.235")),  # rounded up to the tenth of a cent, never down
    (4.75, "EUR", Decimal("4.75")),
    (4.75, "USD", Decimal("5.164")),  # 5.16304... USD at 0.92 EUR to the dollar
])
async def test_an_at_3_deal_price_is_never_sent_below_the_agreed_price(tmp_path, deal_price,
                                                                        cur, wire):
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), deal_ids=("fixed",), base_bid_cpm=Decimal(10),
        max_bid_cpm=Decimal(12)))
    request = {**fixture("banner-site-2.6.json"), "cur": [cur]}
    request["imp"][0]["pmp"] = {"private_auction": 1, "deals": [
        {"id": "fixed", "bidfloor": deal_price, "bidfloorcur": "EUR", "at": 3}]}

    body = (await post(service, request)).json()

    assert body["cur"] == cur
    price = Decimal(str(body["seatbid"][0]["bid"][0]["price"]))
    assert price == wire
    await service.stop()


@pytest.mark.parametrize(("max_cpm", "answer"), [(1, None), (2, "2.173")])
async def test_a_converted_bid_is_never_sent_below_the_floor_nor_above_the_maximum(
        tmp_path, max_cpm, answer):
    """A EUR campaign bidding in USD on a 1 EUR floor (1.08695... USD): at a maximum of
    1 EUR no USD price on the wire meets the floor without passing the maximum, so no bid;
    at 2 EUR (2.17391... USD) the bid is that, rounded down."""
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), currency="EUR", base_bid_cpm=Decimal(5),
        max_bid_cpm=Decimal(max_cpm)))
    request = {**fixture("banner-site-2.6.json"), "cur": ["USD"]}
    request["imp"][0].update(bidfloor=1.0, bidfloorcur="EUR")

    response = await post(service, request)

    if answer is None:
        assert response.status_code == 204
    else:
        assert Decimal(str(response.json()["seatbid"][0]["bid"][0]["price"])) == Decimal(answer)
    await service.stop()


async def test_only_the_candidates_that_may_pay_most_are_scored(tmp_path):
    campaigns = [campaign(number, creative(number * 10, "banner"),
                          max_bid_cpm=Decimal(number), base_bid_cpm=Decimal("0.5"))
                 for number in range(1, 31)]
    service = await started_service(tmp_path, *campaigns)
    request = normalize(decode_request(json.dumps(fixture("banner-site-2.6.json")).encode()))

    outcome = await service.engine.bid(request, exchange=service.engine.index.default_exchange(),
                                       received_at=time.perf_counter())

    assert outcome.scored == 16
    assert int(outcome.response.seatbid[0].bid[0].cid) >= 15  # one of the 16 highest maxima
    await service.stop()
