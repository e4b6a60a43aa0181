"""Award loyalty points for purchases on NATS `ingest.>` until stopped (SIGTERM or Ctrl-C).

Production runs it as its own process, one or more (they share the durable consumer, so each
message goes to one of them). Details: `loyalty.ingest`.
"""

from __future__ import annotations

import asyncio
import signal

import prometheus_client
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from campaign_express.platform import process_bus
from loyalty.ingest import IngestConsumer


class Command(BaseCommand):
    help = "Award loyalty points for purchase events on NATS ingest.<source>.purchase."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--metrics-port", type=int, default=0,
                            help="serve Prometheus metrics on this port (0: none)")

    def handle(self, *args, metrics_port: int, **options) -> None:
        if not settings.CONFIG.loyalty_enabled:
            raise CommandError("Loyalty is disabled (CAMPAIGN_EXPRESS__LOYALTY__ENABLED=false).")
        if not settings.NATS_URL:
            raise CommandError("NATS_URL is not set: the ingest consumer reads NATS JetStream.")
        if metrics_port:
            prometheus_client.start_http_server(metrics_port, addr=settings.CONFIG.api_host)
        self.stdout.write("loyalty ingest: awarding purchases from ingest.>"
                          + (f", metrics on :{metrics_port}" if metrics_port else ""))
        asyncio.run(self._run(IngestConsumer(bus=process_bus())))

    @staticmethod
    async def _run(consumer: IngestConsumer) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await consumer.bus.connect()
        try:
            await consumer.run(stop)
        finally:
            await consumer.bus.close()
