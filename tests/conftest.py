"""Shared fixtures: real service URLs for integration tests.

`scripts/test.sh` (and so `.ci/run`) starts PostgreSQL, Redis, NATS and ClickHouse and sets the
TEST_*_URL variables. Outside it, a test that needs a service whose variable is unset is
skipped with the reason; in CI (CI=true) a missing variable fails the test instead, and a set
but unreachable service always fails loudly.
"""

from __future__ import annotations

import os
import socket
import sys
from urllib.parse import urlsplit

import pytest


def service_url(variable: str) -> str:
    url = os.environ.get(variable, "")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{variable} is not set; CI must provide every service")
        pytest.skip(f"{variable} is not set (scripts/test.sh sets it)")
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=2).close()
    except OSError as error:
        pytest.fail(f"{variable}={url} is not reachable: {error}")
    return url


@pytest.fixture
def redis_url() -> str:
    return service_url("TEST_REDIS_URL")


@pytest.fixture
def nats_url() -> str:
    return service_url("TEST_NATS_URL")


@pytest.fixture
def clickhouse_url() -> str:
    return service_url("TEST_CLICKHOUSE_URL")


@pytest.fixture
def postgres_url() -> str:
    return service_url("TEST_POSTGRES_URL")


@pytest.fixture(autouse=True)
def analytics_client_closed_after_test():
    """chDB opens one data directory per process: a test that opened the process's analytics
    client (a campaign admin page does) closes it, so the next test may open another."""
    yield
    platform = sys.modules.get("campaign_express.platform")
    if platform is not None:
        platform.analytics_close()
