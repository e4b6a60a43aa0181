"""OpenRTB decoding, normalization and the response encoder, on requests written from the spec."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bidding.nbr import NoBid, NoBidReason
from bidding.openrtb import (
    MAX_BODY_BYTES,
    BannerView,
    Bid,
    BidResponse,
    DealView,
    ExternalId,
    InvalidRequest,
    NativeView,
    RequestView,
    SeatBid,
    SupplyChainView,
    VideoView,
    decode_request,
    decode_response,
    encode_response,
    native_request_assets,
    no_bid_body,
    normalize,
    os_name,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture(name: str) -> RequestView:
    return normalize(decode_request((FIXTURES / name).read_bytes()))


def _view(**fields: Any) -> RequestView:
    body = {"id": "r-1", "imp": [{"id": "1", "banner": {"w": 300, "h": 250}}], **fields}
    return normalize(decode_request(msgspec.json.encode(body)))


def test_the_2_5_and_2_6_shapes_normalize_to_the_same_view():
    assert _fixture("banner-site-2.5.json") == _fixture("banner-site-2.6.json")


def test_privacy_and_schain_are_read_from_2_6_fields():
    view = _fixture("banner-site-2.6.json")

    assert view.gdpr_applies is True
    assert view.consent == "CPXegUAPXegUAAfKABENB-EgAPAAAAAAAAYgAAAAAAAA"
    assert view.us_privacy == "1YNN"
    assert view.gpp == "DBACNYA~CPXegUAPXegUAAfKABENB-EgAPAAAAAAAAYgAAAAAAAA~1YNN"
    assert view.gpp_sid == (2, 6)
    assert view.coppa_applies is False
    assert view.has_user_consent is True
    assert view.schain == SupplyChainView(
        is_complete=True,
        nodes=(("publisher-ssp.example", "pub-42"), ("exchange.example", "seller-9")))
    assert view.external_ids == (ExternalId(source="id5-sync.com", id="ID5-abc", agent_type=1),)


def test_the_2_6_field_wins_over_its_ext_twin():
    view = _view(
        regs={"gdpr": 0, "us_privacy": "1NNN", "ext": {"gdpr": 1, "us_privacy": "1YYY"}},
        user={"consent": "new", "ext": {"consent": "old"}},
        source={"schain": {"complete": 0, "nodes": []},
                "ext": {"schain": {"complete": 1, "nodes": [{"asi": "a.example", "sid": "1"}]}}})

    assert view.gdpr_applies is False
    assert view.us_privacy == "1NNN"
    assert view.consent == "new"
    assert view.schain == SupplyChainView(is_complete=False, nodes=())


def test_a_malformed_ext_is_read_as_absent():
    view = _view(regs={"ext": {"gdpr": "maybe", "gpp_sid": "x"}}, user={"ext": "consent"},
                 source={"ext": {"schain": {"nodes": "none"}}})

    assert view.gdpr_applies is None
    assert view.gpp_sid == ()
    assert view.consent == ""
    assert view.schain is None


def test_request_level_fields_and_defaults():
    view = _fixture("banner-site-2.6.json")

    assert view.request_id == "req-banner-26"
    assert view.tmax_ms == 120
    assert view.auction_type == 1
    assert view.currencies == ("USD", "EUR")
    assert view.is_test is False
    assert view.blocked_categories == frozenset({"IAB25", "IAB26"})
    assert view.category_taxonomy == 1
    assert view.blocked_advertiser_domains == frozenset({"competitor.example"})
    assert view.allowed_languages == frozenset({"en", "de"})
    assert view.medium == "site"
    assert view.domain == "news.example"
    assert view.publisher_id == "pub-42"
    assert view.content_categories == ("IAB12", "IAB12-1", "IAB12-2")
    assert view.device_type == "desktop"
    assert view.os == "macos"
    assert view.country == "DEU"
    assert view.region == "DE-BY"
    assert view.city == "Munich"
    assert view.ip == "203.0.113.7"
    assert view.language == "en"
    assert view.segments == frozenset({"seg-sports", "seg-news"})

    bare = _view()
    assert (bare.tmax_ms, bare.auction_type, bare.currencies, bare.medium, bare.domain,
            bare.gdpr_applies, bare.schain) == (None, 2, ("USD",), None, "", None, None)


def test_a_banner_imp():
    imp = _fixture("banner-site-2.6.json").imps[0]

    assert imp.imp_id == "1"
    assert imp.banner == BannerView(sizes=((300, 250), (728, 90)), blocked_types=frozenset({4}),
                                    blocked_attributes=frozenset({1, 3}), mimes=(), position=1)
    assert (imp.video, imp.audio, imp.native) == (None, None, None)
    assert imp.media_types == ("banner",)
    assert imp.floor == Decimal("0.5")
    assert imp.floor_currency == "USD"
    assert imp.tag_id == "homepage-top"
    assert imp.is_secure is True  # absent, on an https page


def test_an_app_video_request():
    view = _fixture("video-app.json")
    imp = view.imps[0]

    assert view.medium == "app"
    assert view.bundle == "com.example.streaming"
    assert view.domain == "streaming.example"
    assert view.publisher_id == "pub-app-3"
    assert view.content_categories == ("IAB1", "IAB1-5")
    assert (view.device_type, view.os, view.country, view.region) == (
        "phone", "android", "FRA", "FR-IDF")
    assert view.gdpr_applies is False
    assert view.user_id == "6d92078a-8246-4ba4-ae5b-76104861e7dc"
    assert imp.video == VideoView(
        mimes=("video/mp4", "video/webm"), min_duration=5, max_duration=30,
        required_durations=(), protocols=frozenset({2, 3, 7}), w=1920, h=1080,
        blocked_attributes=frozenset({6}), plcmt=1, placement=None, pod_id="pod-1",
        pod_duration=60, max_sequence=3, min_cpm_per_second=Decimal("0.25"))
    assert imp.floor == Decimal("12")
    assert imp.floor_currency == "EUR"
    assert imp.is_interstitial is True
    assert imp.is_rewarded is True
    assert imp.is_secure is False  # absent, and no site page


def test_a_native_request():
    view = _fixture("native-site.json")
    native = view.imps[0].native

    assert isinstance(native, NativeView)
    assert native.version == "1.2"
    assert native.blocked_attributes == frozenset({9})
    assert [asset["id"] for asset in native_request_assets(native)] == [1, 2, 3]
    assert view.domain == "recipes.example"
    assert view.region == "US-CA"
    assert view.os == "ios"
    assert view.device_type == "mobile"
    assert view.user_id == ""  # a zeroed IFA is nobody
    assert view.has_user_consent is False  # lmt=1 and us_privacy opt-out


def test_a_native_request_sent_as_an_object_is_kept_as_json_text():
    view = _view(imp=[{"id": "1", "native": {"request": {"ver": "1.1",
                                                          "assets": [{"id": 7}]}}}])
    native = view.imps[0].native

    assert native is not None
    assert native.request == '{"ver":"1.1","assets":[{"id":7}]}'
    assert native_request_assets(native) == [{"id": 7}]
    assert native_request_assets(NativeView(request="not json", version="",
                                            blocked_attributes=frozenset())) == []


def test_floors_are_decimals_and_a_deal_does_not_inherit_the_imp_currency():
    view = _fixture("pmp-deals.json")
    imp = view.imps[0]

    assert imp.floor == Decimal("2.5")
    assert imp.floor_currency == "EUR"
    assert imp.is_private_auction is True
    assert imp.is_secure is True
    assert imp.deals == (
        DealView(deal_id="deal-eur", floor=Decimal("4.75"), floor_currency="EUR",
                 auction_type=3, allowed_seats=frozenset({"seat-1"}),
                 allowed_advertiser_domains=frozenset({"brand.example"}), is_guaranteed=True),
        DealView(deal_id="deal-usd", floor=Decimal("3.1"), floor_currency="USD",
                 auction_type=2, allowed_seats=frozenset(),
                 allowed_advertiser_domains=frozenset(), is_guaranteed=False),
    )
    assert view.device_type == "tablet"
    assert view.os == "ios"


def test_money_is_read_from_the_json_text_without_a_float():
    view = _view(imp=[{"id": "1", "bidfloor": 0.1,
                       "pmp": {"deals": [{"id": 77, "bidfloor": "0.30"}]}}])

    assert view.imps[0].floor == Decimal("0.1")
    assert view.imps[0].deals[0].floor == Decimal("0.30")
    assert view.imps[0].deals[0].deal_id == "77"


@pytest.mark.parametrize("floor", ["-1", "NaN", "Infinity"])
def test_a_nonsense_floor_counts_as_no_floor(floor):
    assert _view(imp=[{"id": "1", "bidfloor": floor}]).imps[0].floor == Decimal(0)


@pytest.mark.parametrize(("secure", "page", "expected"), [
    (1, "http://a.example/", True),
    (0, "https://a.example/", False),
    (None, "https://a.example/", True),
    (None, "http://a.example/", False),
])
def test_secure_is_the_flag_or_else_an_https_page(secure, page, expected):
    imp: dict[str, Any] = {"id": "1", "banner": {"w": 1, "h": 1}}
    if secure is not None:
        imp["secure"] = secure
    assert _view(imp=[imp], site={"page": page}).imps[0].is_secure is expected


@pytest.mark.parametrize(("code", "expected"), [
    (1, "mobile"), (2, "desktop"), (3, "ctv"), (4, "phone"), (5, "tablet"),
    (6, "connected_device"), (7, "set_top_box"), (8, "ooh"), (0, ""), (42, ""), (None, ""),
])
def test_device_type_mapping(code, expected):
    assert _view(device={"devicetype": code}).device_type == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("iOS", "ios"), ("iPadOS", "ios"), ("Android", "android"), ("android", "android"),
    ("Windows", "windows"), ("Windows Phone", "windows"), ("Mac OS X", "macos"),
    ("OS X", "macos"), ("Osx", "macos"), ("MACOSX", "macos"), ("macOS", "macos"),
    ("Linux", "linux"), ("Chrome OS", "chromeos"), ("tvOS", "tvos"), ("Roku", "roku"),
    ("Tizen", "tizen"), ("webOS", "webos"), ("Fire OS", "fireos"), ("Symbian", "other"),
    ("", ""),
])
def test_os_mapping(name, expected):
    assert os_name(name) == expected


def test_the_os_falls_back_to_the_structured_user_agent():
    view = _view(device={"sua": {"platform": {"brand": "Chrome OS", "version": ["14"]}}})
    assert view.os == "chromeos"
    assert _view(device={"os": "iOS", "sua": {"platform": {"brand": "Android"}}}).os == "ios"


@pytest.mark.parametrize(("country", "region", "expected_country", "expected_region"), [
    ("USA", "CA", "USA", "US-CA"),
    ("usa", "tx", "USA", "US-TX"),
    ("US", "MA", "USA", "US-MA"),
    ("USA", "US-MA", "USA", "US-MA"),
    ("GBR", "ENG", "GBR", "GB-ENG"),
    ("USA", "New York", "USA", "NEW YORK"),
    (None, "NY", "", "NY"),
    ("XYZ", "AB", "XYZ", "AB"),
    ("DEU", None, "DEU", ""),
])
def test_country_and_region(country, region, expected_country, expected_region):
    view = _view(device={"geo": {"country": country, "region": region}})
    assert (view.country, view.region) == (expected_country, expected_region)


def test_device_geo_falls_back_to_user_geo():
    assert _view(user={"geo": {"country": "ITA"}}).country == "ITA"


@pytest.mark.parametrize(("user", "ifa", "expected"), [
    ({"buyeruid": "ours", "id": "theirs"}, "device", "ours"),
    ({"id": "theirs"}, "device", "theirs"),
    ({}, "device", "device"),
    (None, "device", "device"),
    ({"buyeruid": ""}, None, ""),
    ({}, "00000000-0000-0000-0000-000000000000", ""),
])
def test_identity_rule(user, ifa, expected):
    fields: dict[str, Any] = {"device": {"ifa": ifa}}
    if user is not None:
        fields["user"] = user
    assert _view(**fields).user_id == expected


# TCF v2 core segments (tests/bidding/test_tcf.py's `encode`) consenting to these purposes,
# the last one also to vendor 755.
TCF_PURPOSES_1_TO_4 = "CPXegUAPXegUAAfKABENB-EgAPAAAAAAAAYgAAAAAAAA"
TCF_PURPOSES_1_AND_2 = "CPXegUAPXegUAAfKABENB-EgAMAAAAAAAAYgAAAAAAAA"
TCF_PURPOSES_1_TO_4_VENDOR_755 = ("CPXegUAPXegUAAfKABENB-EgAPAAAAAAAAYgF5g" + "A" * 125
                                  + "gAAAAA")


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, True),
    ({"regs": {"coppa": 1}}, False),
    ({"regs": {"gdpr": 1}}, False),
    ({"regs": {"gdpr": 1}, "user": {"consent": TCF_PURPOSES_1_TO_4}}, True),
    ({"regs": {"gdpr": 1}, "user": {"ext": {"consent": TCF_PURPOSES_1_TO_4}}}, True),
    ({"regs": {"gdpr": 1}, "user": {"consent": TCF_PURPOSES_1_AND_2}}, False),
    ({"regs": {"gdpr": 1}, "user": {"consent": "CPXx"}}, False),  # not a TCF v2 string
    ({"regs": {"gdpr": 0}, "user": {"consent": TCF_PURPOSES_1_AND_2}}, True),
    ({"regs": {"gdpr": 0}}, True),
    ({"regs": {"us_privacy": "1YYN"}}, False),
    ({"regs": {"us_privacy": "1yyn"}}, False),
    ({"regs": {"us_privacy": "1YNN"}}, True),
    ({"regs": {"us_privacy": "1---"}}, True),
    ({"device": {"lmt": 1}}, False),
    ({"device": {"dnt": 1}}, False),
    ({"device": {"dnt": True}}, False),
    ({"regs": {"ext": {"gdpr": "1"}}}, False),
    ({"regs": {"gpp_sid": [2]}}, False),  # a GPP section applies, and no GPP string
    # GPP's EU TCF section (2): one that refuses every purpose, then one that consents.
    ({"regs": {"gpp": "DBABMA~CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAA", "gpp_sid": [2]}},
     False),
    ({"regs": {"gpp": "DBABMA~" + TCF_PURPOSES_1_TO_4, "gpp_sid": [2]}}, True),
    ({"regs": {"gpp": "DBABMA~" + TCF_PURPOSES_1_TO_4, "gpp_sid": [7]}}, False),  # no usnat
    ({"regs": {"ext": {"gpp_sid": [7]}}}, False),
    ({"regs": {"gpp_sid": []}}, True),
])
def test_has_user_consent(fields, expected):
    assert _view(**fields).has_user_consent is expected


@pytest.mark.parametrize(("consent", "vendor_id", "expected"), [
    (TCF_PURPOSES_1_TO_4, None, True),
    (TCF_PURPOSES_1_TO_4, 755, False),  # the purposes, but not our vendor
    (TCF_PURPOSES_1_TO_4_VENDOR_755, 755, True),
    (TCF_PURPOSES_1_TO_4_VENDOR_755, 756, False),
])
def test_a_configured_vendor_id_also_needs_that_vendors_consent(consent, vendor_id, expected):
    request = decode_request(msgspec.json.encode({"id": "r", "imp": [{"id": "1"}],
                                                  "regs": {"gdpr": 1},
                                                  "user": {"consent": consent}}))

    assert normalize(request, gdpr_vendor_id=vendor_id).has_user_consent is expected


def test_medium_is_the_most_specific_object_sent():
    assert _view(site={"domain": "s.example"}, app={"bundle": "b"}).medium == "app"
    dooh = _view(site={"domain": "s.example"}, dooh={"domain": "d.example"})
    assert (dooh.medium, dooh.domain, dooh.bundle) == ("dooh", "d.example", "")
    assert _view(site={"page": "https://WWW.Page.Example/x?y=1"}).domain == "page.example"


def test_unknown_fields_and_enum_values_are_accepted():
    view = _view(
        imp=[{"id": "1", "banner": {"w": 300, "h": 250, "battr": [999], "btype": [77]},
              "video": {"mimes": ["video/mp4"], "plcmt": 99, "protocols": [99],
                        "brand_new": {"x": 1}},
              "metric": [{"type": "viewability", "value": 0.8}], "ssai": 9}],
        device={"devicetype": 99, "connectiontype": 42}, at=777, unknown_top={"a": [1, 2]},
        ext={"anything": True})

    imp = view.imps[0]
    assert view.auction_type == 777
    assert view.device_type == ""
    assert imp.banner is not None and imp.banner.blocked_attributes == frozenset({999})
    assert imp.video is not None and (imp.video.plcmt, imp.video.protocols) == (
        99, frozenset({99}))


def test_sloppy_types_from_real_exchanges_are_accepted():
    view = _view(imp=[{"id": 5, "banner": {"w": "728", "h": "90"}, "bidfloor": "0.18",
                       "secure": True, "video": {"protocol": [2, 3]}}],
                 regs={"gdpr": True}, source={"ext": "not an object"})

    imp = view.imps[0]
    assert imp.imp_id == "5"
    assert imp.banner is not None and imp.banner.sizes == ((728, 90),)
    assert imp.floor == Decimal("0.18")
    assert imp.is_secure is True
    assert imp.video is not None and imp.video.protocols == frozenset({2, 3})
    assert view.gdpr_applies is True


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "invalid JSON: JSON is malformed: object keys must be strings (byte 1)"),
    (b"", "invalid JSON: Input data was truncated"),
    (b'{"imp": [{"id": "1"}]}', "not a bid request: Object missing required field `id`"),
    (b'{"id": "r"}', "not a bid request: Object missing required field `imp`"),
    (b'{"id": "r", "imp": []}', "imp is empty"),
    (b'{"id": "r", "imp": {"id": "1"}}',
     "not a bid request: Expected `array`, got `object` - at `$.imp`"),
    (b"[]", "not a bid request: Expected `object`, got `array`"),
    (b'"r"', "not a bid request: Expected `object`, got `str`"),
    (b'{"id": "", "imp": [{"id": "1"}]}', "id is empty"),
    (b'{"id": "r", "imp": [{}]}',
     "not a bid request: Object missing required field `id` - at `$.imp[0]`"),
    (b'{"id": "r", "imp": [{"id": "1"}, {"id": ""}]}', "imp[1].id is empty"),
    (b'{"id": "r", "imp": [{"id": "1", "banner": {"w": "wide"}}]}',
     "not a bid request: Expected `int | null`, got `str` - at `$.imp[0].banner.w`"),
    (b'{"id": "r", "imp": [{"id": "1"}], "ext": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
     "invalid JSON: nested too deeply"),
])
def test_invalid_requests(body, reason):
    with pytest.raises(InvalidRequest) as raised:
        decode_request(body)
    assert raised.value.reason == reason
    assert isinstance(raised.value, ValueError)


def test_an_oversize_body_is_refused_before_parsing():
    padding = b" " * MAX_BODY_BYTES
    body = b'{"id": "r", "imp": [{"id": "1"}]}' + padding

    with pytest.raises(InvalidRequest) as raised:
        decode_request(body)
    assert raised.value.reason == (
        f"body is {len(body)} bytes, over the limit of {MAX_BODY_BYTES}")
    assert MAX_BODY_BYTES == 262_144
    with pytest.raises(InvalidRequest, match="over the limit of 10$"):
        decode_request(b'{"id": "r", "imp": [{"id": "1"}]}', max_bytes=10)


def test_response_encoding_exact_bytes():
    response = BidResponse(id="req-1", seatbid=[SeatBid(seat="ce", bid=[Bid(
        id="b-1", impid="1", price=Decimal("1.2345"), adm="<div>ad</div>",
        adomain=["brand.example"], crid="cr-9", cid="c-3", w=300, h=250, mtype=1)])])

    assert encode_response(response) == (
        b'{"id":"req-1","seatbid":[{"bid":[{"id":"b-1","impid":"1","price":1.2345,'
        b'"adm":"<div>ad</div>","adomain":["brand.example"],"cid":"c-3","crid":"cr-9",'
        b'"w":300,"h":250,"mtype":1}],"seat":"ce"}]}')


@pytest.mark.parametrize(("price", "wire"), [
    ("1.23456", b"1.2345"), ("1.23459", b"1.2345"), ("2.50", b"2.5"), ("10", b"10"),
    ("10.0000", b"10"), ("0.00001", b"0"), ("0", b"0"),
])
def test_prices_are_numbers_with_at_most_four_decimals_rounded_down(price, wire):
    response = BidResponse(id="r", cur="EUR", seatbid=[SeatBid(bid=[
        Bid(id="b", impid="1", price=Decimal(price), dealid="deal-eur")])])

    assert encode_response(response) == (
        b'{"id":"r","seatbid":[{"bid":[{"id":"b","impid":"1","price":' + wire
        + b',"dealid":"deal-eur"}]}],"cur":"EUR"}')
    assert response.seatbid[0].bid[0].price == Decimal(price)  # the caller's copy is untouched


@pytest.mark.parametrize("price", ["-0.01", "NaN", "Infinity"])
def test_a_price_that_is_not_an_amount_is_not_encoded(price):
    response = BidResponse(id="r", seatbid=[SeatBid(bid=[
        Bid(id="b", impid="1", price=Decimal(price))])])
    with pytest.raises(ValueError, match="finite, non-negative"):
        encode_response(response)


def test_an_encoded_response_decodes_to_the_same_prices():
    response = BidResponse(id="r", bidid="bid-1", seatbid=[SeatBid(group=1, bid=[
        Bid(id="b", impid="1", price=Decimal("0.1234"), dur=15, cat=["IAB1"], cattax=2)])])

    assert decode_response(encode_response(response)) == response


def test_no_bid_body():
    assert no_bid_body("req-1", NoBid.INSUFFICIENT_TIME.nbr) == b'{"id":"req-1","nbr":15}'
    assert no_bid_body("req-1", NoBid.NO_ELIGIBLE_CAMPAIGN.nbr) == b'{"id":"req-1","nbr":0}'
    assert no_bid_body("r", 2) == b'{"id":"r","nbr":2}'


def test_no_bid_reasons_map_to_spec_codes():
    assert {reason: int(reason.nbr) for reason in NoBid} == {
        NoBid.INVALID_REQUEST: 2, NoBid.TECHNICAL_ERROR: 1, NoBid.OVERLOADED: 1,
        NoBid.STORE_UNAVAILABLE: 1,
        NoBid.INSUFFICIENT_TIME: 15, NoBid.KNOWN_CRAWLER: 3, NoBid.SUSPECTED_NON_HUMAN: 4,
        NoBid.DATA_CENTER_IP: 5, NoBid.UNSUPPORTED_DEVICE: 6, NoBid.BLOCKED_PUBLISHER: 7,
        NoBid.UNMATCHED_USER: 8, NoBid.DAILY_USER_CAP: 9, NoBid.BUDGET_EXHAUSTED: 10,
        NoBid.ADS_TXT_UNAVAILABLE: 11, NoBid.ADS_TXT_VIOLATION: 12,
        NoBid.INCOMPLETE_SUPPLY_CHAIN: 16, NoBid.BLOCKED_SUPPLY_CHAIN_NODE: 17,
        NoBid.NO_ELIGIBLE_CAMPAIGN: 0, NoBid.NO_CONSENT: 0, NoBid.UNSUPPORTED_CURRENCY: 0,
        NoBid.BELOW_FLOOR: 0,
    }
    assert NoBid.DAILY_USER_CAP == "daily_user_cap"
    assert [int(code) for code in NoBidReason] == list(range(18))


def test_the_openrtb_modules_do_not_import_django():
    code = ("import sys, bidding.openrtb, bidding.nbr; "
            "sys.exit(any(name == 'django' or name.startswith('django.') for name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
