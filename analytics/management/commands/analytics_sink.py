"""Consume the ANALYTICS stream into ClickHouse until stopped (SIGTERM or Ctrl-C).

Production runs it as its own process (one or more: they share the durable consumer, so
each message goes to one of them). The embedded platform runs the same sink on a thread of
its own process, so this command is not needed there.
"""

from __future__ import annotations

import asyncio
import signal

import prometheus_client
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics.sink import Sink
from campaign_express.platform import analytics, process_bus


class Command(BaseCommand):
    help = "Insert analytics events from the ANALYTICS stream into ClickHouse, in batches."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--batch-rows", type=int,
                            default=settings.CONFIG.analytics_sink_batch_rows,
                            help="insert when this many events are collected")
        parser.add_argument("--interval", type=float,
                            default=settings.CONFIG.analytics_sink_interval_ms / 1000,
                            help="or when this many seconds passed since the first")
        parser.add_argument("--metrics-port", type=int, default=settings.CONFIG.metrics_port,
                            help="serve Prometheus metrics on this port (0: none)")

    def handle(self, *args, batch_rows: int, interval: float, metrics_port: int,
               **options) -> None:
        if not settings.NATS_URL:
            raise CommandError(
                "NATS_URL is not set: in embedded mode the platform process (`manage.py run`) "
                "runs the analytics sink itself.")
        sink = Sink(bus=process_bus(), backend=analytics(), batch_rows=batch_rows,
                    interval=interval)
        if metrics_port:
            prometheus_client.start_http_server(metrics_port, addr=settings.CONFIG.api_host)
        self.stdout.write(f"analytics sink: {batch_rows} events or {interval} s per INSERT"
                          + (f", metrics on :{metrics_port}" if metrics_port else ""))
        asyncio.run(self._run(sink))

    @staticmethod
    async def _run(sink: Sink) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await sink.bus.connect()
        try:
            await sink.run(stop)
        finally:
            await sink.bus.close()
