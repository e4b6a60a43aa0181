"""Rows of `analytics_events` expire after the retention, where the server has table TTL.

ClickHouse 18.16 has none: there this migration has no statements and is recorded as applied
all the same; the retention task drops whole expired months on every server, and sets this
TTL later if the server is upgraded or the retention setting changes
(analytics.maintenance.events_ttl_sync).
"""

from __future__ import annotations

from analytics.maintenance import events_ttl_statement, ttl_supported
from analytics.migrate import MigrationContext


def statements(context: MigrationContext) -> list[str]:
    if not ttl_supported(context.server_version):
        return []
    return [events_ttl_statement(context.retention_days)]
