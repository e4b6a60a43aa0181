"""Analytics tasks: thin wrappers over services, idempotent, safe to run twice.

The ClickHouse upkeep tasks (rollups, retention) call analytics.maintenance with the process's
backend; ClickHouse being unreachable is logged, not raised: the beat runs them again soon, and
each picks up where the last successful run stopped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import shared_task
from django.conf import settings

from analytics import maintenance, services
from analytics.clickhouse import AnalyticsUnavailable
from campaign_express import platform

logger = logging.getLogger(__name__)


@shared_task(name="analytics.tasks.reports_run_due", ignore_result=True)
def reports_run_due() -> dict[str, int]:
    """Every active scheduled report for its last closed period; a period already run is
    skipped, so the beat may call this as often as it likes."""
    return services.reports_run_due()


@shared_task(name="analytics.tasks.rollups_compute", ignore_result=True)
def rollups_compute() -> list[str]:
    """Roll up the closed hours that are due; returns them as ISO strings."""
    try:
        hours = maintenance.rollup_hours(
            backend=platform.analytics(), now=datetime.now(UTC),
            lookback_hours=settings.CONFIG.analytics_rollup_lookback_hours,
            retention_days=settings.CONFIG.analytics_retention_days)
    except AnalyticsUnavailable as error:
        logger.warning("hourly rollups not computed, ClickHouse is unavailable: %s", error)
        return []
    return [hour.isoformat() for hour in hours]


@shared_task(name="analytics.tasks.retention_enforce", ignore_result=True)
def retention_enforce() -> list[str]:
    """Keep the TTL at the configured retention (where the server has TTL) and drop the
    months wholly past it; returns the dropped partitions."""
    backend = platform.analytics()
    retention_days = settings.CONFIG.analytics_retention_days
    try:
        maintenance.events_ttl_sync(backend=backend, retention_days=retention_days)
        return maintenance.partitions_drop_expired(backend=backend, now=datetime.now(UTC),
                                                   retention_days=retention_days)
    except AnalyticsUnavailable as error:
        logger.warning("analytics retention not enforced, ClickHouse is unavailable: %s", error)
        return []
