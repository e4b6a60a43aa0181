"""Process-wide backend clients that are expensive to open and safe to share across threads.

The analytics client is one per process: chDB allows one process per data path, and a
ClickHouse connection is reused between calls.
"""

from __future__ import annotations

import threading

from django.conf import settings

from analytics.clickhouse import AnalyticsBackend, analytics_from_url

_lock = threading.Lock()
_analytics: AnalyticsBackend | None = None


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
