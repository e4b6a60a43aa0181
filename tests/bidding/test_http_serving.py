"""The bidder process's HTTP serving (`python -m bidding`): uvicorn over a transport that
sends a response's head and body in one write. Tested over a real socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from bidding.__main__ import _HttpProtocol

BODY = b'{"id":"req-1","seatbid":[]}' * 50


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    status = 204 if scope["path"] == "/empty" else 200
    body = b"" if status == 204 else BODY
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free, lifespan="off",
                                           log_config=None, access_log=False,
                                           http=_HttpProtocol))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield free
    server.should_exit = True
    await task


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   path: str) -> tuple[bytes, bytes]:
    writer.write(f"POST {path} HTTP/1.1\r\nHost: bidder\r\nContent-Length: 2\r\n\r\n{{}}"
                 .encode())
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return head, await reader.readexactly(length)


async def test_responses_arrive_whole_and_the_connection_stays_open(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    first_head, first_body = await exchange(reader, writer, "/v1/bid")
    empty_head, empty_body = await exchange(reader, writer, "/empty")
    last_head, last_body = await exchange(reader, writer, "/v1/bid")

    assert first_head.startswith(b"HTTP/1.1 200 OK\r\n") and first_body == BODY
    assert empty_head.startswith(b"HTTP/1.1 204 No Content\r\n") and empty_body == b""
    assert last_head.startswith(b"HTTP/1.1 200 OK\r\n") and last_body == BODY
    writer.close()
    await writer.wait_closed()


async def test_a_response_on_a_connection_the_server_closes_is_sent_before_the_close(
        port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/bid HTTP/1.1\r\nHost: bidder\r\nConnection: close\r\n"
                 b"Content-Length: 2\r\n\r\n{}")

    response = await reader.read(-1)

    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\n" + BODY)
    writer.close()
