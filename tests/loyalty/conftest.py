"""Fixtures for the loyalty tests: users in each role, two advertisers, a program with the
default tiers and the original design's seven rewards, API keys and API clients.

Programs are created through the services (their defaults are part of what is tested);
members and points only ever through earning and redeeming, so every balance has its ledger.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from campaigns.models import Advertiser
from loyalty import services
from loyalty.models import ApiKey, Program
from tests.loyalty.loyalty_fixtures import make_program, make_user


@pytest.fixture
def ops(db) -> User:
    return make_user("ops-user", "ops")


@pytest.fixture
def marketer(db) -> User:
    return make_user("marketer-a", "marketer")


@pytest.fixture
def other_marketer(db) -> User:
    return make_user("marketer-b", "marketer")


@pytest.fixture
def advertiser(marketer) -> Advertiser:
    advertiser = Advertiser.objects.create(name="Northwind Coffee", currency="USD")
    advertiser.marketers.set([marketer])
    return advertiser


@pytest.fixture
def other_advertiser(other_marketer) -> Advertiser:
    advertiser = Advertiser.objects.create(name="Contoso Hotels", currency="EUR")
    advertiser.marketers.set([other_marketer])
    return advertiser


@pytest.fixture
def program(advertiser) -> Program:
    return make_program(advertiser)


@pytest.fixture
def other_program(other_advertiser) -> Program:
    return make_program(other_advertiser, "Contoso Stays")


@pytest.fixture
def api_key(program) -> Callable[..., str]:
    """A key of ``program`` (or another) allowed the given actions; the secret."""

    def make(*actions: str, for_program: Program | None = None) -> str:
        _, secret = services.api_key_create(actor=None, program=for_program or program,
                                            name="Till 1",
                                            actions=list(actions or ApiKey.Action.values))
        return secret

    return make


@pytest.fixture
def client_for() -> Callable[[str | None], APIClient]:
    """An API client sending ``Authorization: Bearer <secret>`` (none for None)."""

    def make(secret: str | None) -> APIClient:
        client = APIClient()
        if secret is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make


@pytest.fixture
def marketer_api(marketer) -> APIClient:
    client = APIClient()
    client.force_authenticate(marketer)
    return client
