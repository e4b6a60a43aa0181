"""The report API: exact numbers, a marketer's scope, validation errors, permissions."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import User
from openapi_spec_validator import validate
from rest_framework.test import APIClient

from analytics.clickhouse import AnalyticsBackend, ClickHouseBackend
from analytics.events import EventType
from tests.analytics.report_django_fixtures import (
    People,
    chdb_platform_backend,
    people,
    platform_backend,
    use_analytics,
)
from tests.analytics.report_fixtures import events_insert, make_event

__all__ = ["chdb_platform_backend", "people", "platform_backend"]

URL = "/api/v1/reports/campaign-performance/"
AT = datetime(2024, 5, 17, 10, 15, tzinfo=UTC)
DAY = {"start": "2024-05-17", "end": "2024-05-17"}


def _client(user: User | None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def _insert(backend: AnalyticsBackend, people: People) -> None:
    ours = {"campaign_id": str(people.campaign.pk), "advertiser_id": str(people.advertiser.pk),
            "creative_id": str(people.creative.pk), "exchange": "xa"}
    theirs = {"campaign_id": str(people.other_campaign.pk),
              "advertiser_id": str(people.other_advertiser.pk), "exchange": "xa"}
    billing = make_event(EventType.BILLING, AT, price_micros=1_500_000, currency="USD", **ours)
    events_insert(backend, [
        make_event(EventType.BID_REQUEST, AT, request_id="a1", exchange="xa", latency_us=300),
        make_event(EventType.BID, AT, request_id="a1", **ours),
        make_event(EventType.BID_REQUEST, AT, request_id="a2", exchange="xa", latency_us=500),
        make_event(EventType.BID, AT, request_id="a2", **ours),
        make_event(EventType.WIN, AT, price_micros=1_200_000, **ours),
        billing,
        make_event(EventType.IMPRESSION, AT, **ours),
        make_event(EventType.IMPRESSION, AT, **ours),
        make_event(EventType.CLICK, AT, **ours),
        make_event(EventType.BID_REQUEST, AT, request_id="b1", exchange="xa", latency_us=900),
        make_event(EventType.BID, AT, request_id="b1", **theirs),
        make_event(EventType.WIN, AT, **theirs),
        make_event(EventType.BILLING, AT, price_micros=2_000_000, currency="EUR", **theirs),
        make_event(EventType.BID_REQUEST, AT, request_id="x1", exchange="xa", latency_us=1000,
                   reason="no_eligible_campaign"),
        make_event(EventType.NO_BID, AT, request_id="x1", exchange="xa",
                   reason="no_eligible_campaign"),
        make_event(EventType.LOYALTY_EARN, AT, advertiser_id=str(people.advertiser.pk),
                   attributes={"points": "40"}),
        make_event(EventType.LOYALTY_EARN, AT, advertiser_id=str(people.other_advertiser.pk),
                   attributes={"points": "70"}),
        make_event(EventType.DSP_SENT, AT, partner="acme"),
        make_event(EventType.DSP_TIMEOUT, AT, partner="acme"),
    ])
    events_insert(backend, [billing])


def _row(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "bucket": "2024-05-17T00:00:00Z", "key": "", "name": "", "requests": 0, "bids": 0,
        "wins": 0, "losses": 0, "impressions": 0, "clicks": 0, "conversions": 0, "spend": {},
        "ecpm": {}, "ctr": None, "win_rate": None, "no_bids": 0, "no_bid_reasons": {},
        "latency_p50_us": None, "latency_p95_us": None, "latency_p99_us": None}
    return row | fields


def test_a_marketer_reads_their_campaigns_numbers(platform_backend: AnalyticsBackend,
                                                  people: People) -> None:
    _insert(platform_backend, people)

    response = _client(people.marketer).get(URL, DAY)

    assert response.status_code == 200, response.json()
    ours = _row(key=str(people.campaign.pk), name="Morning Rush", bids=2, wins=1,
                impressions=2, clicks=1, spend={"USD": "1.500000"}, ecpm={"USD": "750.000000"},
                ctr=0.5, win_rate=0.5, latency_p50_us=400, latency_p95_us=490,
                latency_p99_us=498)
    assert response.json() == {
        "start": "2024-05-17", "end": "2024-05-17", "grain": "day", "group_by": "campaign",
        "rows": [ours], "total": ours | {"bucket": None, "key": "", "name": ""}}


def test_ops_see_every_advertiser_and_the_requests_of_none(
        platform_backend: AnalyticsBackend, people: People) -> None:
    _insert(platform_backend, people)

    response = _client(people.ops).get(URL, DAY | {"group_by": "advertiser"})

    rows = {row["key"]: row for row in response.json()["rows"]}
    assert set(rows) == {"", str(people.advertiser.pk), str(people.other_advertiser.pk)}
    assert rows[""] == _row(requests=4, no_bids=1,
                            no_bid_reasons={"no_eligible_campaign": 1})
    assert (rows[str(people.other_advertiser.pk)]["name"],
            rows[str(people.other_advertiser.pk)]["spend"]) == ("Contoso", {"EUR": "2.000000"})
    assert response.json()["total"]["spend"] == {"EUR": "2.000000", "USD": "1.500000"}


def test_a_marketer_never_sees_another_advertisers_numbers(
        chdb_platform_backend: AnalyticsBackend, people: People) -> None:
    _insert(chdb_platform_backend, people)
    client = _client(people.marketer)

    by_exchange = client.get(URL, DAY | {"group_by": "exchange"})
    other_campaign = client.get(URL, DAY | {"campaign": people.other_campaign.pk})
    other_advertiser = client.get(URL, DAY | {"advertiser": people.other_advertiser.pk})
    loyalty = client.get("/api/v1/reports/loyalty/", DAY)

    assert [(row["key"], row["bids"], row["requests"], row["spend"])
            for row in by_exchange.json()["rows"]] == [("xa", 2, 0, {"USD": "1.500000"})]
    assert other_campaign.status_code == 404
    assert other_campaign.json() == {"campaign": ["No such campaign."], "code": "not_found"}
    assert other_advertiser.status_code == 404
    assert [(row["key"], row["earned_points"]) for row in loyalty.json()["rows"]] == [
        (str(people.advertiser.pk), 40)]


def test_a_campaign_report_by_creative_and_hour(chdb_platform_backend: AnalyticsBackend,
                                                people: People) -> None:
    _insert(chdb_platform_backend, people)

    response = _client(people.marketer).get(URL, DAY | {
        "campaign": people.campaign.pk, "group_by": "creative", "grain": "hour"})

    assert [(row["bucket"], row["key"], row["name"], row["bids"])
            for row in response.json()["rows"]] == [
        ("2024-05-17T10:00:00Z", str(people.creative.pk), "Banner", 2)]


def test_no_bid_reasons_loyalty_and_dsp_reports(chdb_platform_backend: AnalyticsBackend,
                                                people: People) -> None:
    _insert(chdb_platform_backend, people)
    client = _client(people.ops)

    no_bids = client.get("/api/v1/reports/no-bid-reasons/", DAY | {"group_by": "exchange"})
    loyalty = client.get("/api/v1/reports/loyalty/", DAY)
    dsp = client.get("/api/v1/reports/dsp/", DAY)

    assert no_bids.json()["rows"] == [{"bucket": "2024-05-17T00:00:00Z", "key": "xa",
                                       "name": "", "reason": "no_eligible_campaign",
                                       "count": 1}]
    assert sorted((row["name"], row["earned"], row["earned_points"])
                  for row in loyalty.json()["rows"]) == [("Contoso", 1, 70),
                                                         ("Northwind", 1, 40)]
    assert dsp.json()["rows"] == [{"bucket": "2024-05-17T00:00:00Z", "key": "acme",
                                   "name": "", "sent": 1, "won": 0, "lost": 0, "timeouts": 1,
                                   "win_rate": 0.0}]


def test_invalid_parameters_are_400_with_each_field(people: People) -> None:
    client = _client(people.marketer)

    missing = client.get(URL, {"grain": "week", "group_by": "country", "campaign": "x"})
    backwards = client.get(URL, {"start": "2024-05-17", "end": "2024-05-16"})
    too_long = client.get(URL, {"start": "2024-01-01", "end": "2024-02-01", "grain": "hour"})

    assert missing.status_code == 400
    assert missing.json() == {
        "start": ["This field is required."], "end": ["This field is required."],
        "grain": ['"week" is not a valid choice.'],
        "group_by": ['"country" is not a valid choice.'],
        "campaign": ["A valid integer is required."]}
    assert backwards.status_code == 400
    assert backwards.json() == {"end": ["The end must not be before the start."]}
    assert too_long.json() == {"end": ["A report by hour spans at most 31 days."]}


def test_reports_need_a_user_who_may_view_campaigns(people: People) -> None:
    stranger = User.objects.create_user("no-role", is_staff=True)

    assert _client(None).get(URL, DAY).status_code in (401, 403)
    assert _client(stranger).get(URL, DAY).status_code == 403


def test_analytics_that_cannot_be_reached_is_503(people: People) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = ClickHouseBackend(f"clickhouse://default@127.0.0.1:{port}/nowhere",
                                    connect_timeout=1)
    use_analytics(unreachable)
    try:
        response = _client(people.marketer).get(URL, DAY)
    finally:
        use_analytics(None)

    assert response.status_code == 503
    assert response.json() == {"detail": "Analytics is unavailable; try again shortly."}


def test_the_schema_documents_the_report_endpoints(db) -> None:
    schema = APIClient().get("/api/schema/?format=json").json()

    validate(schema)
    assert {"/api/v1/reports/campaign-performance/", "/api/v1/reports/no-bid-reasons/",
            "/api/v1/reports/loyalty/", "/api/v1/reports/dsp/"} <= set(schema["paths"])
    parameters = schema["paths"][URL]["get"]["parameters"]
    assert sorted(parameter["name"] for parameter in parameters) == [
        "advertiser", "campaign", "end", "grain", "group_by", "start"]


def test_a_days_range_ends_after_the_last_day(chdb_platform_backend: AnalyticsBackend,
                                              people: People) -> None:
    late = datetime(2024, 5, 17, 23, 59, 59, tzinfo=UTC)
    events_insert(chdb_platform_backend, [
        make_event(EventType.BID, late, campaign_id=str(people.campaign.pk),
                   advertiser_id=str(people.advertiser.pk)),
        make_event(EventType.BID, late + timedelta(seconds=1),
                   campaign_id=str(people.campaign.pk), advertiser_id=str(people.advertiser.pk)),
    ])

    response = _client(people.marketer).get(URL, DAY)

    assert response.json()["total"]["bids"] == 1

