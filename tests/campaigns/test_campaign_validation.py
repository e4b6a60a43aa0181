import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from campaigns import services
from campaigns.models import AuditEntry, Campaign, Creative

START = datetime.datetime(2030, 3, 1, 9, 0, tzinfo=datetime.UTC)
END = datetime.datetime(2030, 4, 1, 9, 0, tzinfo=datetime.UTC)
NOT_NEGATIVE = "Ensure this value is greater than or equal to 0."
DEVICE_TYPES = "mobile, desktop, ctv, phone, tablet, connected_device, set_top_box, ooh"
ONE_OF_ASSET_OR_MARKUP = "Upload an asset or give third-party markup (one of the two)."

# Overrides of a valid campaign, and the exact field errors they cause.
CAMPAIGN_RULES = {
    "total budget not negative": (
        {"total_budget": "-5", "daily_budget": "-5"},
        {"total_budget": [NOT_NEGATIVE], "daily_budget": [NOT_NEGATIVE]}),
    "daily budget not negative": ({"daily_budget": "-1"}, {"daily_budget": [NOT_NEGATIVE]}),
    "daily budget within total": (
        {"daily_budget": "1000.0001"},
        {"daily_budget": ["The daily budget cannot exceed the total budget."]}),
    "end after start": ({"end_at": START}, {"end_at": ["The end must be after the start."]}),
    "end not before start": (
        {"end_at": START - datetime.timedelta(days=1)},
        {"end_at": ["The end must be after the start."]}),
    "max bid at least base bid": (
        {"max_bid_cpm": "2.4999"},
        {"max_bid_cpm": ["The maximum bid must be at least the base bid."]}),
    "countries": (
        {"countries": ["USA", "ZZZ", "us"]},
        {"countries": ["Not a valid ISO 3166-1 alpha-3 country code: ZZZ, us."]}),
    "countries without duplicates": (
        {"countries": ["USA", "USA"]}, {"countries": ["Remove the duplicate values."]}),
    "regions": (
        {"regions": ["US-CA", "US-XX"]},
        {"regions": ["Not a valid ISO 3166-2 region code: US-XX."]}),
    "device types": (
        {"device_types": ["phone", "watch"]},
        {"device_types": [f"Not a valid device type (one of {DEVICE_TYPES}): watch."]}),
    "categories": (
        {"categories": ["IAB1", "IAB1-2", "Books"]},
        {"categories": ["Not a valid IAB content category (IAB1, IAB1-2, ...): Books."]}),
    "allowed domains": (
        {"site_domains_allow": ["news.example", "Not A Domain"]},
        {"site_domains_allow": ["Not a valid lower-case domain: Not A Domain."]}),
    "blocked domains": (
        {"site_domains_block": ["http://tabloid.example"]},
        {"site_domains_block": ["Not a valid lower-case domain: http://tabloid.example."]}),
    "dayparts": (
        {"dayparts": {"mon": [9, 24]}},
        {"dayparts": ["Not a valid hour for mon (0-23): 24."]}),
    "frequency caps grow with the period": (
        {"frequency_cap_hour": 5, "frequency_cap_day": 3},
        {"frequency_cap_day": ["A cap over a longer period cannot be lower than a shorter one."]}),
}

# Overrides of a valid markup banner, and the exact field errors they cause.
CREATIVE_RULES = {
    "asset or markup": ({"markup": ""}, {"asset": [ONE_OF_ASSET_OR_MARKUP]}),
    "markup not blank": ({"markup": "   "}, {"asset": [ONE_OF_ASSET_OR_MARKUP]}),
    "banner sizes": ({"sizes": []}, {"sizes": ["A banner needs at least one size."]}),
    "size format": (
        {"sizes": ["300by250"]},
        {"sizes": ["Not a valid size (WIDTHxHEIGHT, e.g. 300x250): 300by250."]}),
    "video details": (
        {"format": "video", "sizes": []},
        {"mimes": ["A video creative needs its MIME types."],
         "duration_seconds": ["A video creative needs its duration."],
         "protocols": ["A video creative needs its protocols."]}),
    "video protocols": (
        {"format": "video", "mimes": ["video/mp4"], "duration_seconds": 15},
        {"protocols": ["A video creative needs its protocols."]}),
    "protocol range": (
        {"format": "video", "mimes": ["video/mp4"], "duration_seconds": 15, "protocols": [2, 15]},
        {"protocols": ["Not a valid protocol (1-14): 15."]}),
    "landing domain": (
        {"adomain": "Shop Example"},
        {"adomain": ["Not a valid lower-case domain: shop example."]}),
    "creative categories": (
        {"categories": ["Food"]},
        {"categories": ["Not a valid IAB content category (IAB1, IAB1-2, ...): Food."]}),
}


def campaign_payload(advertiser, **overrides) -> dict:
    return {"advertiser": advertiser.pk, "name": "Spring Sale", "start_at": START.isoformat(),
            "end_at": END.isoformat(), "total_budget": "1000", "daily_budget": "100",
            "base_bid_cpm": "2.5", "max_bid_cpm": "5", **overrides}


def campaign_data(advertiser, **overrides) -> dict:
    data = {"advertiser": advertiser, "name": "Spring Sale", "start_at": START, "end_at": END,
            "total_budget": Decimal("1000"), "daily_budget": Decimal("100"),
            "base_bid_cpm": Decimal("2.5"), "max_bid_cpm": Decimal("5")}
    for name, value in overrides.items():
        data[name] = Decimal(value) if isinstance(value, str) and name.endswith(
            ("budget", "cpm")) else value
    return data


def creative_data(campaign, **overrides) -> dict:
    return {"campaign": campaign, "name": "Banner", "format": "banner", "sizes": ["300x250"],
            "markup": "<div>ad</div>", "adomain": "shop.example", **overrides}


def json_ready(overrides: dict) -> dict:
    return {name: value.isoformat() if isinstance(value, datetime.datetime) else value
            for name, value in overrides.items()}


@pytest.mark.parametrize(("overrides", "errors"), CAMPAIGN_RULES.values(), ids=CAMPAIGN_RULES)
def test_the_api_refuses_an_invalid_campaign_naming_the_field(
        overrides, errors, marketer_api, advertiser):
    response = marketer_api.post("/api/v1/campaigns/",
                                 campaign_payload(advertiser, **json_ready(overrides)),
                                 format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert Campaign.objects.count() == 0
    assert AuditEntry.objects.count() == 0


@pytest.mark.parametrize(("overrides", "errors"), CAMPAIGN_RULES.values(), ids=CAMPAIGN_RULES)
def test_the_service_refuses_an_invalid_campaign_naming_the_field(
        overrides, errors, marketer, advertiser):
    with pytest.raises(ValidationError) as raised:
        services.campaign_create(actor=marketer, data=campaign_data(advertiser, **overrides))

    assert raised.value.message_dict == errors
    assert Campaign.objects.count() == 0
    assert AuditEntry.objects.count() == 0


@pytest.mark.parametrize(("overrides", "errors"), CAMPAIGN_RULES.values(), ids=CAMPAIGN_RULES)
def test_the_api_refuses_an_invalid_update_and_keeps_the_campaign(
        overrides, errors, marketer_api, campaign_factory, advertiser, marketer):
    campaign = campaign_factory(advertiser=advertiser, created_by=marketer, start_at=START,
                                end_at=END)

    response = marketer_api.patch(f"/api/v1/campaigns/{campaign.pk}/", json_ready(overrides),
                                  format="json")

    assert response.status_code == 400
    assert response.json() == errors
    stored = Campaign.objects.get(pk=campaign.pk)
    assert (stored.total_budget, stored.daily_budget, stored.countries, stored.end_at) == (
        Decimal("1000.0000"), Decimal("100.0000"), [], END)
    assert AuditEntry.objects.count() == 0


def test_a_valid_campaign_passes_every_rule(marketer_api, advertiser):
    response = marketer_api.post("/api/v1/campaigns/", campaign_payload(
        advertiser, countries=["USA", "CAN"], regions=["US-CA"], device_types=["phone"],
        categories=["IAB8", "IAB8-1"], site_domains_block=["tabloid.example"],
        dayparts={"mon": [9, 10]}, frequency_cap_hour=1, frequency_cap_day=1),
        format="json")

    assert response.status_code == 201
    assert Campaign.objects.get().countries == ["USA", "CAN"]


@pytest.mark.parametrize(("overrides", "errors"), CREATIVE_RULES.values(), ids=CREATIVE_RULES)
def test_the_api_refuses_an_invalid_creative_naming_the_field(
        overrides, errors, marketer_api, campaign):
    payload = {**creative_data(campaign, **overrides), "campaign": campaign.pk}

    response = marketer_api.post("/api/v1/creatives/", payload, format="json")

    assert response.status_code == 400
    assert response.json() == errors
    assert Creative.objects.count() == 0
    assert AuditEntry.objects.count() == 0


@pytest.mark.parametrize(("overrides", "errors"), CREATIVE_RULES.values(), ids=CREATIVE_RULES)
def test_the_service_refuses_an_invalid_creative_naming_the_field(
        overrides, errors, marketer, campaign):
    with pytest.raises(ValidationError) as raised:
        services.creative_create(actor=marketer, data=creative_data(campaign, **overrides))

    assert raised.value.message_dict == errors
    assert Creative.objects.count() == 0
    assert AuditEntry.objects.count() == 0


def test_a_creative_cannot_have_both_an_asset_and_markup(marketer_api, marketer, campaign,
                                                         png_upload):
    response = marketer_api.post("/api/v1/creatives/", {
        "campaign": campaign.pk, "name": "Banner", "format": "banner", "sizes": '["300x250"]',
        "adomain": "shop.example", "markup": "<div>ad</div>", "asset": png_upload()},
        format="multipart")
    with pytest.raises(ValidationError) as raised:
        services.creative_create(actor=marketer, data=creative_data(campaign,
                                                                    asset=png_upload()))

    assert response.status_code == 400
    assert response.json() == {"asset": [ONE_OF_ASSET_OR_MARKUP]}
    assert raised.value.message_dict == {"asset": [ONE_OF_ASSET_OR_MARKUP]}
    assert Creative.objects.count() == 0


def test_an_asset_must_suit_the_format(marketer_api, campaign, png_upload):
    response = marketer_api.post("/api/v1/creatives/", {
        "campaign": campaign.pk, "name": "Spot", "format": "video", "adomain": "shop.example",
        "mimes": '["video/mp4"]', "protocols": "[2, 3]", "duration_seconds": 15,
        "asset": png_upload()}, format="multipart")

    assert response.status_code == 400
    assert response.json() == {"asset": ["A video asset must be one of: mp4, webm, mov."]}
    assert Creative.objects.count() == 0


def test_an_uploaded_banner_is_stored(marketer_api, campaign, png_upload):
    response = marketer_api.post("/api/v1/creatives/", {
        "campaign": campaign.pk, "name": "Banner", "format": "banner", "sizes": '["300x250"]',
        "adomain": "Shop.Example", "asset": png_upload("spring.png")}, format="multipart")

    assert response.status_code == 201
    creative = Creative.objects.get()
    assert (creative.adomain, creative.markup, creative.sizes) == ("shop.example", "",
                                                                   ["300x250"])
    assert creative.asset.name.startswith("creatives/")
    assert creative.asset.name.endswith(".png")


def test_a_valid_video_passes_every_rule(marketer, campaign):
    creative = services.creative_create(actor=marketer, data=creative_data(
        campaign, format="video", sizes=["640x360"], mimes=["video/mp4"], protocols=[2, 3],
        duration_seconds=15, markup="<VAST version='3.0'/>"))

    assert (creative.format, creative.approval_status) == ("video", "pending")


@pytest.mark.parametrize(("update", "constraint"), [
    ({"daily_budget": Decimal("1000.0001")}, "campaign_daily_within_total"),
    ({"total_budget": Decimal("-1"), "daily_budget": Decimal("-1")},
     "campaign_budget_not_negative"),
    ({"end_at": START}, "campaign_ends_after_start"),
    ({"max_bid_cpm": Decimal("2.4999")}, "campaign_max_bid_at_least_base"),
    ({"status": "launched"}, "campaign_status_valid"),
])
def test_the_database_refuses_a_campaign_write_that_bypasses_the_rules(
        update, constraint, campaign_factory, advertiser, marketer):
    campaign = campaign_factory(advertiser=advertiser, created_by=marketer, start_at=START,
                                end_at=END)

    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).update(**update)

    assert constraint in str(raised.value)
    stored = Campaign.objects.get(pk=campaign.pk)
    assert (stored.status, stored.total_budget, stored.daily_budget, stored.end_at,
            stored.max_bid_cpm) == ("draft", Decimal("1000.0000"), Decimal("100.0000"), END,
                                    Decimal("5.0000"))


def test_the_database_refuses_an_approver_who_wrote_the_campaign(campaign):
    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).update(approved_by=campaign.created_by)

    assert "campaign_approver_not_author" in str(raised.value)
    assert Campaign.objects.get(pk=campaign.pk).approved_by is None


def test_the_database_refuses_a_creative_without_asset_or_markup(creative_factory, campaign):
    creative = creative_factory(campaign=campaign)

    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        Creative.objects.filter(pk=creative.pk).update(markup="")

    assert "creative_has_asset_or_markup" in str(raised.value)
    assert Creative.objects.get(pk=creative.pk).markup == creative.markup


def test_the_database_refuses_a_reviewer_who_wrote_the_creative(creative_factory, campaign):
    creative = creative_factory(campaign=campaign)

    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        Creative.objects.filter(pk=creative.pk).update(reviewed_by=creative.created_by)

    assert "creative_reviewer_not_author" in str(raised.value)
    assert Creative.objects.get(pk=creative.pk).reviewed_by is None
