"""Django fixtures for the report tests: two advertisers, each with a marketer and a campaign,
an ops user, and the platform's analytics client pointed at a test database."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from analytics.clickhouse import AnalyticsBackend
from campaign_express import platform
from campaigns.models import Advertiser, Campaign, Creative
from tests.analytics.report_fixtures import analytics_tables_create, close_backend, open_backend


@dataclass(frozen=True)
class People:
    ops: User
    marketer: User
    other_marketer: User
    advertiser: Advertiser
    other_advertiser: Advertiser
    campaign: Campaign
    creative: Creative
    other_campaign: Campaign


def _user(username: str, role: str) -> User:
    user = User.objects.create_user(username, email=f"{username}@example.com",
                                    password="correct-horse-battery", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def _campaign(advertiser: Advertiser, author: User, name: str, currency: str) -> Campaign:
    now = timezone.now()
    return Campaign.objects.create(
        advertiser=advertiser, name=name, currency=currency, created_by=author,
        start_at=now - datetime.timedelta(days=30), end_at=now + datetime.timedelta(days=30),
        total_budget=Decimal(1000), daily_budget=Decimal(100), base_bid_cpm=Decimal("2.5"),
        max_bid_cpm=Decimal(5))


@pytest.fixture
def people(db) -> People:
    ops = _user("ops-user", "ops")
    marketer = _user("marketer-a", "marketer")
    other_marketer = _user("marketer-b", "marketer")
    advertiser = Advertiser.objects.create(name="Northwind")
    advertiser.marketers.set([marketer])
    other_advertiser = Advertiser.objects.create(name="Contoso", currency="EUR")
    other_advertiser.marketers.set([other_marketer])
    campaign = _campaign(advertiser, marketer, "Morning Rush", "USD")
    creative = Creative.objects.create(campaign=campaign, name="Banner", format="banner",
                                       sizes=["300x250"], markup="<a>Shop</a>",
                                       adomain="shop.example", created_by=marketer)
    other_campaign = _campaign(other_advertiser, other_marketer, "Weekend Getaways", "EUR")
    return People(ops=ops, marketer=marketer, other_marketer=other_marketer,
                  advertiser=advertiser, other_advertiser=other_advertiser, campaign=campaign,
                  creative=creative, other_campaign=other_campaign)


def use_analytics(backend: AnalyticsBackend | None) -> None:
    """Make `backend` the process's analytics client (None: back to the settings')."""
    with platform._lock:
        platform._analytics = backend


def _platform_backend(kind: str, request: pytest.FixtureRequest,
                      tmp_path: Path) -> Iterator[AnalyticsBackend]:
    url = request.getfixturevalue("clickhouse_url") if kind == "clickhouse" else None
    platform.analytics_close()
    backend = open_backend(kind, tmp_path, url)
    analytics_tables_create(backend)
    use_analytics(backend)
    yield backend
    use_analytics(None)
    close_backend(backend)


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def platform_backend(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> Iterator[AnalyticsBackend]:
    """The platform's analytics client on a fresh database, on chDB and on the server."""
    yield from _platform_backend(request.param, request, tmp_path)


@pytest.fixture
def chdb_platform_backend(request: pytest.FixtureRequest, tmp_path: Path
                          ) -> Iterator[AnalyticsBackend]:
    """The same on chDB only, for tests about what surrounds the SQL."""
    yield from _platform_backend("chdb", request, tmp_path)
