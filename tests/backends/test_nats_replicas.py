"""JetStream replicas: what the NATS bus creates gets CAMPAIGN_EXPRESS__NATS__REPLICAS copies.

Against the shared single NATS server (one replica works, three are refused with an error that
names the setting) and a private three-server cluster (three replicas are placed).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from campaign_express import env
from campaign_express.backends.bus import BusUnavailable, bus_from_url
from campaign_express.backends.nats_bus import NatsBus
from tests.campaign_express.platform import PrivateNats, free_port, wait_for_port

pytestmark = pytest.mark.nats


async def stream_replicas(url: str, stream: str) -> int:
    client = await nats.connect(url)
    try:
        info = await client.jetstream(timeout=5).stream_info(stream)
        return info.config.num_replicas or 1
    finally:
        await client.close()


async def delete_streams(url: str, streams: list[str]) -> None:
    client = await nats.connect(url)
    try:
        manager = client.jetstream(timeout=5)
        for stream in streams:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await manager.delete_stream(stream)
    finally:
        await client.close()


async def create_all(bus: NatsBus, name: str) -> list[str]:
    """A stream, a key-value bucket and an object store; the names of their streams."""
    await bus.stream_ensure(name.upper(), (f"{name}.events",))
    await bus.kv_put(name, "key", b"value")
    await bus.object_put(f"{name}_objects", "object", b"data")
    return [name.upper(), f"KV_{name}", f"OBJ_{name}_objects"]


@pytest.fixture
def name() -> str:
    return f"replicas{uuid.uuid4().hex[:12]}"


async def test_one_replica_on_a_single_server(nats_url: str, name: str) -> None:
    bus = NatsBus(nats_url, replicas=1)
    await bus.connect()
    try:
        streams = await create_all(bus, name)
        assert [await stream_replicas(nats_url, stream) for stream in streams] == [1, 1, 1]
    finally:
        await bus.close()
        await delete_streams(nats_url, [name.upper(), f"KV_{name}", f"OBJ_{name}_objects"])


async def test_three_replicas_on_a_single_server_fail_naming_the_setting(
    nats_url: str, name: str
) -> None:
    bus = NatsBus(nats_url, replicas=3)
    await bus.connect()
    try:
        for create in (lambda: bus.stream_ensure(name.upper(), (f"{name}.events",)),
                       lambda: bus.kv_put(name, "key", b"value"),
                       lambda: bus.object_put(f"{name}_objects", "object", b"data")):
            with pytest.raises(BusUnavailable) as raised:
                await create()
            assert "replicas > 1 not supported in non-clustered mode" in str(raised.value)
            assert "CAMPAIGN_EXPRESS__NATS__REPLICAS=3 needs a JetStream cluster" in str(
                raised.value)
    finally:
        await bus.close()
        await delete_streams(nats_url, [name.upper(), f"KV_{name}", f"OBJ_{name}_objects"])


async def test_the_bus_from_a_url_takes_replicas_from_the_environment(
    nats_url: str, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env.NATS_REPLICAS, "2")
    bus = bus_from_url(nats_url)
    await bus.connect()
    try:
        with pytest.raises(BusUnavailable, match="CAMPAIGN_EXPRESS__NATS__REPLICAS=2"):
            await bus.stream_ensure(name.upper(), (f"{name}.events",))
    finally:
        await bus.close()
        await delete_streams(nats_url, [name.upper()])


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_a_bus_with_replicas_outside_1_to_5_is_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env.NATS_REPLICAS, value)
    with pytest.raises(env.ConfigError, match="^CAMPAIGN_EXPRESS__NATS__REPLICAS must be"):
        NatsBus("nats://127.0.0.1:4222")
    with pytest.raises(ValueError, match="replicas must be between 1 and 5, got 6"):
        NatsBus("nats://127.0.0.1:4222", replicas=6)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[str]]:
    """Three nats-servers with JetStream, routed to each other; their client URLs."""
    binary = PrivateNats(tmp_path).binary
    client_ports = [free_port() for _ in range(3)]
    route_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports)
    processes = [
        subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(client_port), "-n", f"n{index}", "-js",
             "-sd", str(tmp_path / f"n{index}"), "--cluster_name", "test",
             "--cluster", f"nats://127.0.0.1:{route_port}", "--routes", routes],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for index, (client_port, route_port) in enumerate(
            zip(client_ports, route_ports, strict=True))
    ]
    try:
        for port in client_ports:
            wait_for_port(port, 10)
        yield [f"nats://127.0.0.1:{port}" for port in client_ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(10)


async def connected_when_jetstream_is_ready(url: str, replicas: int) -> NatsBus:
    """The cluster elects its JetStream leader a few seconds after start."""
    bus = NatsBus(url, replicas=replicas, timeout=5)
    await bus.connect()
    for _ in range(100):
        try:
            await bus.kv_get("ready", "key")
            return bus
        except BusUnavailable:
            await asyncio.sleep(0.2)
    await bus.close()
    pytest.fail("the NATS cluster's JetStream did not become ready")


@pytest.mark.slow
async def test_three_replicas_on_a_three_server_cluster(cluster: list[str], name: str) -> None:
    bus = await connected_when_jetstream_is_ready(cluster[0], replicas=3)
    try:
        streams = await create_all(bus, name)
        assert [await stream_replicas(cluster[1], stream) for stream in streams] == [3, 3, 3]
    finally:
        await bus.close()

