"""Users in the ops and marketer roles for the DSP partner admin and API."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from campaigns.roles import MARKETER, OPS, roles_sync


def _user(username: str, role: str):
    roles_sync()
    user = get_user_model().objects.create_user(username=username, password="x",
                                                is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def ops(db):
    return _user("ops-dsp", OPS)


@pytest.fixture
def marketer(db):
    return _user("marketer-dsp", MARKETER)


@pytest.fixture
def ops_api(ops) -> APIClient:
    client = APIClient()
    client.force_authenticate(ops)
    return client


@pytest.fixture
def marketer_api(marketer) -> APIClient:
    client = APIClient()
    client.force_authenticate(marketer)
    return client
