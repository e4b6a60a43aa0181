"""Run the bidder as its own process: ``python -m bidding``.

Reads the same environment as every other process (`campaign_express.env`), serves
`POST /v1/bid[/{exchange}]` and health on the HTTP port (`bidding.http_server` under uvloop),
`campaign.bidding.v1.BiddingService` on the gRPC port, bid requests from the bus
(`campaign-bids.bid-requests`) and Prometheus metrics on the metrics port; spans go to the
OTLP endpoint when one is configured. No Django is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import signal
import sys

import prometheus_client
import uvloop

from bidding.app import BidderApp
from bidding.http_server import Server
from bidding.openrtb.request import MAX_BODY_BYTES
from bidding.service import BidderService
from campaign_express import env, telemetry
from campaign_express.backends.bus import bus_from_url
from campaign_express.backends.store import store_from_url
from campaign_express.logs import logging_config

logger = logging.getLogger("bidding")


async def serve(config: env.Config, service: BidderService) -> None:
    """Starts the service, serves HTTP until SIGTERM or SIGINT, then drains and stops."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await service.start()
    # The app refuses bodies over MAX_BODY_BYTES itself (a counted invalid request); the
    # server only bounds what it buffers.
    server = Server(BidderApp(service),
                    max_body_bytes=2 * MAX_BODY_BYTES, trusted_proxies=config.trusted_proxies)
    await server.start(config.api_host, config.http_port)
    logger.info("bidder serving HTTP on %s:%d", config.api_host, config.http_port)
    try:
        await stopping.wait()
    finally:
        await server.close()
        await service.stop()


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
    # uvloop: the C event loop takes a share of the bid path's CPU off it (BENCHMARKS.md).
    try:
        uvloop.run(serve(config, service))
    except Exception:  # noqa: BLE001 - reported, then the process exits non-zero
        logger.exception("bidder failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
