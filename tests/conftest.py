"""Shared fixtures: real service URLs for integration tests.

`scripts/test.sh` (and so `.ci/run`) starts PostgreSQL, Redis, NATS and ClickHouse and sets the
TEST_*_URL variables. Outside it, a test that needs a service whose variable is unset is
skipped with the reason; in CI (CI=true) a missing variable fails the test instead, and a set
but unreachable service always fails loudly.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
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


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Cluster of three masters of this test run's own (`redis-server` processes on
    free ports, joined by `redis-cli --cluster create`); the URL names its first node."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server and redis-cli are needed for the Redis Cluster tests")
        pytest.skip("redis-server or redis-cli is not installed")
    directory = tmp_path_factory.mktemp("redis-cluster")
    ports = _cluster_ports(3)
    processes = []
    try:
        for port in ports:
            node = Path(directory, str(port))
            node.mkdir()
            processes.append(subprocess.Popen(
                [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                 "--cluster-config-file", "nodes.conf", "--dir", str(node), "--save", "",
                 "--appendonly", "no"], stdout=subprocess.DEVNULL))
        for port in ports:
            _wait_for_port(port)
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True,
                       stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not all(b"cluster_state:ok" in subprocess.run(
                [cli, "-p", str(port), "cluster", "info"], capture_output=True).stdout
                for port in ports):
            if time.monotonic() > deadline:
                pytest.fail("the test Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose Cluster bus port (port + 10000) is free as well."""
    ports: list[int] = []
    for port in range(21000 + os.getpid() % 4000, 30000):
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError("no free ports for a Redis Cluster")


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
