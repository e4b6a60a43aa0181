"""Run the whole platform in one process: web, bidder and scheduled tasks.

Embedded mode's single command: it migrates, optionally loads demo data, publishes the config
snapshot unless the bus already holds the latest, starts the in-process task runner when no
Celery broker is configured, the analytics sink when the event stream or chDB is in-process
and the loyalty ingest consumer when the bus is, and serves Django and the bidder on one port
with uvicorn.

The in-process bus starts empty, and after a restart every saved change is already published:
without the publish here the bidder would find no snapshot and answer every bid 503.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from campaign_express.env import PREFIX, VARIABLES, Config

DEFAULT_PUBLIC_URL = next(variable.default for variable in VARIABLES
                          if variable.name == f"{PREFIX}PUBLIC_URL")


def local_host(host: str) -> str:
    """Where this machine reaches a server bound to `host` (a wildcard on 127.0.0.1), as a URL
    writes it (an IPv6 address in brackets)."""
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def embedded_public_url(config: Config, *, host: str, port: int) -> str:
    """`CAMPAIGN_EXPRESS__PUBLIC_URL`, or the address served when it is left at its default.

    Notice, billing and click URLs in bids and uploaded assets' URLs start with it: the default
    names port 8080, which is wrong as soon as `--port` (or `API__HTTP_PORT`) picks another.
    A value that differs from the default is the operator's (a proxy or a port mapping in
    front) and is kept.
    """
    if config.public_url != DEFAULT_PUBLIC_URL.rstrip("/"):
        return config.public_url
    return f"http://{local_host(host)}:{port}"


def uvicorn_options(config: Config, *, host: str, port: int) -> dict[str, Any]:
    """How the command runs uvicorn.

    The caller's address, which exchanges with an IP allow-list are checked against, comes
    from `X-Forwarded-For` only when the peer is in `CAMPAIGN_EXPRESS__API__TRUSTED_PROXIES`,
    as in the bidder process (`bidding.gateway.caller_address`: the right-most hop that is not
    a trusted proxy, which is uvicorn's rule too). uvicorn's default trusts 127.0.0.1, so any
    local caller could have claimed an allowed address. The networks are passed normalized:
    uvicorn ignores one with host bits set, which the variable accepts.
    """
    trusted = [str(ipaddress.ip_network(network, strict=False))
               for network in config.trusted_proxies]
    return {"host": host, "port": port, "lifespan": "on", "log_level": "info",
            "access_log": False, "proxy_headers": bool(trusted), "forwarded_allow_ips": trusted}


class Command(BaseCommand):
    help = "Migrate, optionally seed demo data, and serve the platform on one port."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--demo", action="store_true", help="load demo data (idempotent)")
        parser.add_argument("--host", default=settings.CONFIG.api_host)
        parser.add_argument("--port", type=int, default=settings.CONFIG.http_port)
        parser.add_argument("--grpc-port", type=int, default=settings.CONFIG.grpc_port,
                            help="the bidder's gRPC port (0: none)")
        parser.add_argument("--no-migrate", action="store_true",
                            help="skip `migrate` and `migrate_clickhouse` (production runs them "
                                 "as their own step)")

    def handle(self, *args, demo: bool, host: str, port: int, grpc_port: int,
               no_migrate: bool, **options) -> None:
        import uvicorn

        from campaign_express.backends.loop_thread import LoopThread
        from campaign_express.celery import BEAT_SCHEDULE
        from campaign_express.platform import process_bus
        from campaign_express.router import embedded_application
        from campaign_express.tasks import InProcessRunner, runner

        public_url = embedded_public_url(settings.CONFIG, host=host, port=port)
        if public_url != settings.CONFIG.public_url:
            # Before anything reads them: the snapshot's asset URLs, the bidder's notice URLs.
            settings.CONFIG = dataclasses.replace(settings.CONFIG, public_url=public_url)
            settings.PUBLIC_BASE_URL = public_url
        if not no_migrate:
            call_command("migrate", interactive=False, verbosity=0)
            call_command("migrate_clickhouse", verbosity=0)
            self.stdout.write("Database and ClickHouse migrated.")
        if demo:
            call_command("seed_demo", stdout=self.stdout)
        self._snapshot_restore()
        tasks = runner()
        if isinstance(tasks, InProcessRunner):
            tasks.start_schedule(BEAT_SCHEDULE)
            self.stdout.write(f"Scheduled tasks run in-process ({len(BEAT_SCHEDULE)} entries).")
        consumers = []
        if not (settings.NATS_URL and settings.CLICKHOUSE_URL):
            # The events stream or chDB lives in this process, so its sink runs here too.
            from analytics.sink import Sink
            from campaign_express.platform import analytics

            sink = Sink(bus=process_bus(), backend=analytics(),
                        batch_rows=settings.CONFIG.analytics_sink_batch_rows,
                        interval=settings.CONFIG.analytics_sink_interval_ms / 1000)
            consumers.append(LoopThread(name="analytics-sink", bus=sink.bus, main=sink.run))
            self.stdout.write("Analytics events go to ClickHouse from this process.")
        if not settings.NATS_URL and settings.CONFIG.loyalty_enabled:
            from loyalty.ingest import IngestConsumer

            ingest = IngestConsumer(bus=process_bus())
            consumers.append(LoopThread(name="loyalty-ingest", bus=ingest.bus, main=ingest.run))
            self.stdout.write("Loyalty purchases on ingest.> are awarded in this process.")
        for consumer in consumers:
            consumer.start()
        shown = local_host(host)
        base = f"http://{shown}:{port}"
        self.stdout.write(
            f"\nCampaign Express is starting on {base}\n"
            f"  admin      {base}/admin/\n"
            f"  API        {base}/api/v1/\n"
            f"  API docs   {base}/api/docs/\n"
            f"  live view  {base}/admin/analytics/live/\n"
            f"  health     {base}/health   readiness {base}/ready\n"
            + (f"  public URL {settings.CONFIG.public_url} (notice, click and asset URLs)\n"
               if settings.CONFIG.public_url != base else "")
            + (f"  gRPC       {shown}:{grpc_port} (campaign.bidding.v1.BiddingService)\n"
               if grpc_port else "") +
            f"  API token  curl -s -X POST {base}/api/v1/auth/token/ "
            "-d username=marketer -d password=PASSWORD\n"
            f"  campaigns  curl -s {base}/api/v1/campaigns/ -H 'Authorization: Token TOKEN'\n"
            f"  a bid      curl -s -X POST {base}/v1/bid -H 'Content-Type: application/json' "
            "--data @docs/examples/bid-request.json\n")
        try:
            uvicorn.run(embedded_application(grpc_port=grpc_port or None),
                        **uvicorn_options(settings.CONFIG, host=host, port=port))
        finally:
            if isinstance(tasks, InProcessRunner):
                tasks.stop()
            for consumer in consumers:
                consumer.stop()

    def _snapshot_restore(self) -> None:
        """Before serving, so the bidder loads the snapshot as it starts."""
        from campaign_express.backends.bus import BusUnavailable
        from campaigns.snapshot import snapshot_restore

        try:
            version = snapshot_restore()
        except BusUnavailable as error:
            self.stderr.write(f"Config snapshot not published, the bus is unavailable ({error}); "
                              "the schedule tries again.")
            return
        if version is not None:
            self.stdout.write(f"Config snapshot {version} published.")
