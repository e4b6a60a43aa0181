"""The bidder process's HTTP server (`bidding.http_server`), over a real socket."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bidding.http_server import Server

ROOT = Path(__file__).resolve().parents[2]

BODY = b'{"id":"req-1","seatbid":[]}' * 50
MAX_BODY = 4096


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Echoes what it saw: the method, path, query and body; `/empty` is a 204, `/slow`
    answers late, `/stream` sends its body in parts without a length, `/fail` raises."""
    body = (await receive())["body"]
    path = scope["path"]
    if path == "/fail":
        raise RuntimeError("app failure")
    if path == "/slow":
        await asyncio.sleep(0.2)
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"one,", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
        return
    status = 204 if path == "/empty" else 200
    payload = b"" if status == 204 else (
        BODY if path == "/v1/bid" else
        f"{scope['method']} {path} {scope['query_string'].decode()} ".encode() + body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(payload)).encode()),
                            (b"x-client", scope["client"][0].encode())]})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server(app, max_body_bytes=MAX_BODY, keep_alive_seconds=0.5)
    await server.start("127.0.0.1", 0)
    yield server
    await server.close(timeout=1)


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                   body: bytes = b"{}") -> tuple[bytes, bytes]:
    writer.write(f"POST {path} HTTP/1.1\r\nHost: bidder\r\nContent-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    return await read_response(reader)


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


async def connect(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert server.address is not None
    return await asyncio.open_connection(*server.address)


async def test_responses_arrive_whole_and_the_connection_stays_open(server: Server) -> None:
    reader, writer = await connect(server)

    first_head, first_body = await exchange(reader, writer, "/v1/bid")
    empty_head, empty_body = await exchange(reader, writer, "/empty")
    last_head, last_body = await exchange(reader, writer, "/v1/bid")

    assert first_head.startswith(b"HTTP/1.1 200 OK\r\n") and first_body == BODY
    assert b"x-client: 127.0.0.1\r\n" in first_head
    assert empty_head.startswith(b"HTTP/1.1 204 No Content\r\n") and empty_body == b""
    assert last_head.startswith(b"HTTP/1.1 200 OK\r\n") and last_body == BODY
    writer.close()


async def test_behind_a_trusted_proxy_the_caller_is_the_forwarded_address() -> None:
    trusting = Server(app, max_body_bytes=MAX_BODY, trusted_proxies=("127.0.0.0/8", "10.1.0.0/16"))
    await trusting.start("127.0.0.1", 0)
    reader, writer = await connect(trusting)

    async def client_seen(forwarded: bytes) -> bytes:
        writer.write(b"POST /v1/bid HTTP/1.1\r\nHost: b\r\n" + forwarded
                     + b"Content-Length: 2\r\n\r\n{}")
        head, _ = await read_response(reader)
        return next(line.split(b": ")[1] for line in head.split(b"\r\n")
                    if line.startswith(b"x-client"))

    # The right-most address that is not a trusted proxy: earlier hops are the caller's word.
    assert await client_seen(b"X-Forwarded-For: 198.51.100.7\r\n") == b"198.51.100.7"
    assert await client_seen(b"X-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.1.2.3\r\n") == (
        b"203.0.113.9")
    assert await client_seen(b"") == b"127.0.0.1"
    writer.close()
    await trusting.close(timeout=1)


async def test_a_peer_that_is_no_trusted_proxy_cannot_claim_another_address(
        server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /v1/bid HTTP/1.1\r\nHost: b\r\nX-Forwarded-For: 198.51.100.7\r\n"
                 b"Content-Length: 2\r\n\r\n{}")

    head, _ = await read_response(reader)

    assert b"x-client: 127.0.0.1\r\n" in head
    writer.close()


async def test_path_query_and_body_reach_the_app(server: Server) -> None:
    reader, writer = await connect(server)

    _, body = await exchange(reader, writer, "/v1/notice/win%20x?price=1.5&a=b", b"payload")

    assert body == b"POST /v1/notice/win x price=1.5&a=b payload"
    writer.close()


async def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"".join(
        f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Length: 1\r\n\r\n{n}".encode()
        for n, path in enumerate(("/slow", "/a", "/slow", "/b"))))

    bodies = [(await read_response(reader))[1] for _ in range(4)]

    assert bodies == [b"POST /slow  0", b"POST /a  1", b"POST /slow  2", b"POST /b  3"]
    writer.close()


async def test_chunked_request_body_and_expect_continue(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: b\r\nExpect: 100-continue\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")

    _, body = await read_response(reader)

    assert body == b"POST /echo  abcde"
    writer.close()


async def test_a_streamed_body_without_length_is_chunked(server: Server) -> None:
    assert server.address is not None
    connection = http.client.HTTPConnection(*server.address)

    def get() -> bytes:
        connection.request("GET", "/stream")
        response = connection.getresponse()
        assert response.getheader("transfer-encoding") == "chunked"
        return response.read()

    assert await asyncio.to_thread(get) == b"one,two"
    connection.close()


async def test_oversized_and_malformed_requests_get_400_and_a_close(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /v1/bid HTTP/1.1\r\nHost: b\r\nContent-Length: %d\r\n\r\n"
                 % (MAX_BODY + 1) + b"x" * (MAX_BODY + 1))
    response = await reader.read(-1)
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    writer.close()

    reader, writer = await connect(server)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    assert (await reader.read(-1)).startswith(b"HTTP/1.1 400 Bad Request\r\n")
    writer.close()


async def test_an_app_failure_is_a_500_and_the_server_goes_on(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /fail HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n")
    assert (await reader.read(-1)).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    writer.close()

    reader, writer = await connect(server)
    head, _ = await exchange(reader, writer, "/v1/bid")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.close()


async def test_connection_close_and_http_1_0_close_after_the_response(server: Server) -> None:
    for request in (b"POST /v1/bid HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
                    b"Content-Length: 2\r\n\r\n{}",
                    b"POST /v1/bid HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"):
        reader, writer = await connect(server)
        writer.write(request)

        response = await reader.read(-1)

        assert response.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"connection: close\r\n" in response
        assert response.endswith(b"\r\n\r\n" + BODY)
        writer.close()


async def test_an_idle_connection_is_closed_after_the_keep_alive_time(server: Server) -> None:
    reader, writer = await connect(server)
    await exchange(reader, writer, "/v1/bid")

    assert await asyncio.wait_for(reader.read(-1), timeout=3) == b""
    writer.close()


async def test_close_lets_a_request_in_flight_finish(server: Server) -> None:
    reader, writer = await connect(server)
    writer.write(b"POST /slow HTTP/1.1\r\nHost: b\r\nContent-Length: 1\r\n\r\nx")
    await asyncio.sleep(0.05)

    await server.close(timeout=2)

    response = await reader.read(-1)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"POST /slow  x")
    writer.close()


def test_the_bidder_process_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`python -m bidding` on embedded backends: health over this server, then SIGTERM ends it
    with exit status 0 after draining."""
    ports = []
    for _ in range(3):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            ports.append(probe.getsockname()[1])
    environ = {name: value for name, value in os.environ.items()
               if not name.startswith("CAMPAIGN_EXPRESS__")
               and name not in ("REDIS_URL", "NATS_URL")}
    environ.update({"CAMPAIGN_EXPRESS__API__HOST": "127.0.0.1",
                    "CAMPAIGN_EXPRESS__API__HTTP_PORT": str(ports[0]),
                    "CAMPAIGN_EXPRESS__API__GRPC_PORT": str(ports[1]),
                    "CAMPAIGN_EXPRESS__METRICS__PORT": str(ports[2]),
                    "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path),
                    "CAMPAIGN_EXPRESS__LOG": "info"})
    log_path = tmp_path / "bidder.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "bidding"], cwd=ROOT, env=environ,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/live",
                                            timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "bidder serving HTTP on 127.0.0.1" in log_path.read_text()
    assert "Traceback" not in log_path.read_text()
