"""Process-wide backend clients, and one-shot backend calls from Django's sync code.

The analytics client is one per process: chDB allows one process per data path, and a
ClickHouse connection is reused between calls. In embedded mode the in-process bus and store
are one per process too, shared by the web side and the embedded bidder; with NATS or Redis
configured, sync code opens a connection for the call and closes it, since an asyncio client
belongs to the loop that made it.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import async_to_sync
from django.conf import settings

from analytics.clickhouse import AnalyticsBackend, analytics_from_url
from campaign_express.backends.bus import Bus, InProcessBus, bus_from_url
from campaign_express.backends.store import MemoryStore, Store, store_from_url

T = TypeVar("T")

_lock = threading.Lock()
_analytics: AnalyticsBackend | None = None
_embedded_bus: InProcessBus | None = None
_embedded_store: MemoryStore | None = None


def analytics() -> AnalyticsBackend:
    global _analytics
    with _lock:
        if _analytics is None:
            _analytics = analytics_from_url(settings.CLICKHOUSE_URL,
                                            chdb_path=settings.CHDB_PATH)
        return _analytics


def analytics_close() -> None:
    """Close the process's analytics client (chDB frees its data path for another opener)."""
    global _analytics
    with _lock:
        if _analytics is not None:
            _analytics.close()
            _analytics = None


def embedded_bus() -> InProcessBus:
    global _embedded_bus
    with _lock:
        if _embedded_bus is None:
            _embedded_bus = InProcessBus()
        return _embedded_bus


def embedded_store() -> MemoryStore:
    global _embedded_store
    with _lock:
        if _embedded_store is None:
            _embedded_store = MemoryStore()
        return _embedded_store


def process_bus() -> Bus:
    """The bus an async process (the bidder) keeps open for its lifetime."""
    return bus_from_url(settings.NATS_URL) if settings.NATS_URL else embedded_bus()


def process_store() -> Store:
    return store_from_url(settings.REDIS_URL) if settings.REDIS_URL else embedded_store()


def bus_call(operation: Callable[[Bus], Awaitable[T]]) -> T:
    """Run one bus operation from sync code."""

    async def run() -> T:
        bus = process_bus()
        await bus.connect()
        try:
            return await operation(bus)
        finally:
            if settings.NATS_URL:
                await bus.close()

    return async_to_sync(run)()


def store_call(operation: Callable[[Store], Awaitable[T]]) -> T:
    """Run one store operation from sync code."""

    async def run() -> T:
        store = process_store()
        try:
            return await operation(store)
        finally:
            if settings.REDIS_URL:
                await store.close()

    return async_to_sync(run)()
