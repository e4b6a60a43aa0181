"""Run the bidder as its own process: ``python -m bidding``.

Reads the same environment as every other process (`campaign_express.env`), serves
`POST /v1/bid[/{exchange}]` and health on the HTTP port, `campaign.bidding.v1.BiddingService`
on the gRPC port, bid requests from the bus (`campaign-bids.bid-requests`) and Prometheus
metrics on the metrics port; spans go to the OTLP endpoint when one is configured. No Django is
loaded.
"""

from __future__ import annotations

import asyncio
import logging.config
import sys
from typing import Any, cast

import prometheus_client
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bidding.app import BidderApp
from bidding.service import BidderService
from campaign_express import env, telemetry
from campaign_express.backends.bus import bus_from_url
from campaign_express.backends.store import store_from_url
from campaign_express.logs import logging_config


class _CorkedTransport:
    """A connection's transport whose writes in one turn of the event loop leave as one.

    uvicorn writes a response's head and its body separately: two system calls and, with
    TCP_NODELAY, two packets for every bid. Joined, they are one; the CPU that saves is a
    few percent of a bid's (BENCHMARKS.md). Everything else goes to the real transport.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a `_CorkedTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(cast("asyncio.Transport", _CorkedTransport(transport)))


def main() -> None:
    try:
        config = env.load()
    except env.ConfigError as error:
        sys.exit(f"configuration error: {error}")
    logging.config.dictConfig(logging_config(config.log_filter, config.log_format))
    telemetry.configure(config, service_name=telemetry.BIDDER_SERVICE)
    service = BidderService(config=config, bus=bus_from_url(config.nats_url),
                            store=store_from_url(config.redis_url), grpc_port=config.grpc_port)
    prometheus_client.start_http_server(config.metrics_port, addr=config.api_host)
    # uvloop and httptools: the C event loop and HTTP parser take a tenth of the bid path's
    # CPU off the loop (BENCHMARKS.md). Exchanges keep pools of keep-alive connections; a
    # server closing one after uvicorn's default 5 idle seconds races the exchange's next
    # request on it, which then fails.
    uvicorn.run(BidderApp(service), host=config.api_host, port=config.http_port,
                lifespan="on", log_config=None, access_log=False, loop="uvloop",
                http=_HttpProtocol, timeout_keep_alive=75)


if __name__ == "__main__":
    main()
