"""`/health`, `/live` and `/ready` for the web process.

`/ready` is 200 while the database answers: without it the web process cannot do its job.
Every other backend's state is reported in the body, measured on each call with a short
timeout, and never fails readiness: a blip of Redis, NATS or ClickHouse must not take web
pods out of service. In embedded mode the platform's router adds the bidder's state to this
answer and holds it at 503 until the bidder is ready too (`campaign_express.router`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

CHECK_TIMEOUT_SECONDS = 2.0


async def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


async def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "alive"})


async def ready(request: HttpRequest) -> JsonResponse:
    checks = {
        "database": (connection.vendor, _database),
        "store": ("redis" if settings.REDIS_URL else "in-process", _store),
        "bus": ("nats" if settings.NATS_URL else "in-process", _bus),
        "analytics": ("clickhouse" if settings.CLICKHOUSE_URL else "chdb", _analytics),
        "tasks": ("celery" if settings.CELERY_BROKER_URL else "in-process", _tasks),
    }
    results = await asyncio.gather(*(_measure(kind, check) for kind, check in checks.values()))
    backends = dict(zip(checks, results, strict=True))
    is_ready = backends["database"]["ok"]
    return JsonResponse(
        {"status": "ready" if is_ready else "not ready", "node": settings.CONFIG.node_id,
         "backends": backends},
        status=200 if is_ready else 503)


async def _measure(kind: str, check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except Exception as error:  # noqa: BLE001 - any failure is a state to report, not a crash
        return {"kind": kind, "ok": False, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"kind": kind, "ok": True,
            "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


@sync_to_async(thread_sensitive=False)
def _database() -> None:
    from django.db import connections

    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connections["default"].close()


async def _store() -> None:
    from campaign_express.backends.store import store_from_url

    store = store_from_url(settings.REDIS_URL)
    try:
        await store.ping()
    finally:
        await store.close()


async def _bus() -> None:
    from campaign_express.backends.bus import bus_from_url

    bus = bus_from_url(settings.NATS_URL)
    try:
        await bus.connect()
        await bus.ping()
    finally:
        await bus.close()


async def _analytics() -> None:
    from campaign_express.platform import analytics

    await sync_to_async(lambda: analytics().ping(), thread_sensitive=False)()


async def _tasks() -> None:
    if not settings.CELERY_BROKER_URL:
        return
    from campaign_express.celery import app

    def ping_broker() -> None:
        with app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=CHECK_TIMEOUT_SECONDS)

    await sync_to_async(ping_broker, thread_sensitive=False)()
