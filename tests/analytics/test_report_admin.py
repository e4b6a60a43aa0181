"""The admin: the campaign page's numbers and chart, and scheduled report runs' downloads."""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime, time, timedelta

from django.test import Client

from analytics import services
from analytics.clickhouse import AnalyticsBackend, ClickHouseBackend
from analytics.events import EventType
from analytics.models import ReportDefinition, ReportRun
from tests.analytics.report_django_fixtures import (
    People,
    chdb_platform_backend,
    people,
    platform_backend,
    use_analytics,
)
from tests.analytics.report_fixtures import events_insert, make_event

__all__ = ["chdb_platform_backend", "people", "platform_backend"]


def _change_page(people: People) -> str:
    client = Client()
    client.force_login(people.marketer)
    response = client.get(f"/admin/campaigns/campaign/{people.campaign.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_campaign_page_shows_the_last_seven_days(platform_backend: AnalyticsBackend,
                                                     people: People) -> None:
    today = datetime.now(UTC).date()
    yesterday = datetime.combine(today - timedelta(days=1), time(12), tzinfo=UTC)
    this_morning = datetime.combine(today, time(0, 1), tzinfo=UTC)
    ids = {"campaign_id": str(people.campaign.pk), "advertiser_id": str(people.advertiser.pk)}
    events_insert(platform_backend, [
        make_event(EventType.BID_REQUEST, yesterday, request_id="r1", latency_us=400),
        make_event(EventType.BID, yesterday, request_id="r1", **ids),
        make_event(EventType.BID_REQUEST, yesterday, request_id="r2", latency_us=600),
        make_event(EventType.BID, yesterday, request_id="r2", **ids),
        make_event(EventType.BID_REQUEST, this_morning, request_id="r3", latency_us=800),
        make_event(EventType.BID, this_morning, request_id="r3", **ids),
        make_event(EventType.WIN, this_morning, **ids),
        make_event(EventType.IMPRESSION, this_morning, **ids),
        make_event(EventType.CLICK, this_morning, **ids),
        make_event(EventType.BILLING, this_morning, price_micros=2_500_000, currency="USD",
                   **ids),
        make_event(EventType.BID, this_morning - timedelta(days=7), **ids),
        make_event(EventType.BID, this_morning, campaign_id=str(people.other_campaign.pk),
                   advertiser_id=str(people.other_advertiser.pk)),
    ])

    page = _change_page(people)

    assert "Performance, last 7 days" in page
    assert '<td class="performance-bids">3</td>' in page
    assert '<td class="performance-wins">1</td>' in page
    assert '<td class="performance-impressions">1</td>' in page
    assert '<td class="performance-clicks">1</td>' in page
    assert '<td class="performance-spend">2.50 USD</td>' in page
    assert "<td>2500.00 USD</td>" in page  # eCPM
    assert "600 / 780 / 796 µs" in page
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="analytics-chart"') == 1
    assert f"<title>{today - timedelta(days=1):%b %d}: 2</title>" in page  # yesterday's bids
    assert f"<title>{today:%b %d}: 2.50</title>" in page  # today's spend
    assert f"<title>{today - timedelta(days=6):%b %d}: 0</title>" in page


def test_the_campaign_page_renders_when_analytics_is_unavailable(people: People) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    use_analytics(ClickHouseBackend(f"clickhouse://default@127.0.0.1:{port}/nowhere",
                                    connect_timeout=1))
    try:
        page = _change_page(people)
    finally:
        use_analytics(None)

    assert "Analytics is unavailable, so this campaign's numbers cannot be shown" in page
    assert "analytics-chart" not in page
    assert 'name="name" value="Morning Rush"' in page


def test_a_new_campaign_page_has_no_numbers_yet(people: People) -> None:
    client = Client()
    client.force_login(people.marketer)

    response = client.get("/admin/campaigns/campaign/add/")

    assert response.status_code == 200
    assert "analytics-chart" not in response.content.decode()


def test_a_run_downloads_as_csv_and_summary(chdb_platform_backend: AnalyticsBackend,
                                            people: People) -> None:
    day = date(2024, 5, 17)
    events_insert(chdb_platform_backend, [
        make_event(EventType.BID, datetime(2024, 5, 17, 9, tzinfo=UTC),
                   campaign_id=str(people.campaign.pk), advertiser_id=str(people.advertiser.pk))])
    definition = ReportDefinition.objects.create(name="Daily bids", owner=people.ops,
                                                 recipients="ops@example.com")
    run = services.report_run_execute(definition=definition, period_start=day, period_end=day)
    client = Client()
    client.force_login(people.ops)

    listing = client.get("/admin/analytics/reportrun/").content.decode()
    csv = client.get(f"/admin/analytics/reportrun/{run.pk}/csv/")
    summary = client.get(f"/admin/analytics/reportrun/{run.pk}/summary/")

    assert f'href="/admin/analytics/reportrun/{run.pk}/csv/"' in listing
    assert csv.status_code == 200
    assert csv["Content-Disposition"] == (
        'attachment; filename="daily-bids-2024-05-17-2024-05-17.csv"')
    lines = b"".join(csv.streaming_content).decode().splitlines()
    assert lines[0].startswith("period,campaign,name,requests,bids,wins,")
    assert lines[1].startswith(f"2024-05-17,{people.campaign.pk},Morning Rush,0,1,0,")
    assert lines[2].startswith("total,,,0,1,0,")
    assert summary.status_code == 200
    assert "<h1 style=\"font-size: 18px;\">Daily bids</h1>" in summary.content.decode()


def test_runs_of_other_owners_are_hidden_from_a_marketer(people: People) -> None:
    definition = ReportDefinition.objects.create(name="Ops only", owner=people.ops)
    run = ReportRun.objects.create(definition=definition, period_start=date(2024, 5, 17),
                                   period_end=date(2024, 5, 17))
    client = Client()
    client.force_login(people.marketer)  # the marketer role may view runs

    listing = client.get("/admin/analytics/reportrun/")
    assert listing.status_code == 200
    assert f"/admin/analytics/reportrun/{run.pk}/" not in listing.content.decode()
    assert client.get(f"/admin/analytics/reportrun/{run.pk}/csv/").status_code == 404


def test_a_definition_made_in_the_admin_belongs_to_its_author(people: People) -> None:
    client = Client()
    client.force_login(people.ops)

    response = client.post("/admin/analytics/reportdefinition/add/", {
        "name": "Weekly exchanges", "kind": "campaign_performance", "grouping": "exchange",
        "cadence": "weekly", "recipients": "a@example.com, b@example.com", "is_active": "on"})
    refused = client.post("/admin/analytics/reportdefinition/add/", {
        "name": "Bad", "kind": "campaign_performance", "grouping": "campaign",
        "cadence": "daily", "recipients": "a@example.com\nnot-an-address"})

    assert response.status_code == 302
    definition = ReportDefinition.objects.get(name="Weekly exchanges")
    assert (definition.owner, definition.recipient_list()) == (
        people.ops, ["a@example.com", "b@example.com"])
    assert refused.status_code == 200
    assert "Not an email address: not-an-address." in refused.content.decode()



def test_a_marketer_schedules_a_report_over_their_own_advertiser(people: People) -> None:
    client = Client()
    client.force_login(people.marketer)

    form = client.get("/admin/analytics/reportdefinition/add/")
    response = client.post("/admin/analytics/reportdefinition/add/", {
        "name": "My daily", "kind": "campaign_performance", "grouping": "campaign",
        "cadence": "daily", "advertisers": [str(people.advertiser.pk)],
        "recipients": "me@example.com", "is_active": "on"})

    assert form.status_code == 200
    assert "Contoso" not in form.content.decode()
    assert response.status_code == 302
    definition = ReportDefinition.objects.get(name="My daily")
    assert (definition.owner, list(definition.advertisers.all())) == (
        people.marketer, [people.advertiser])
