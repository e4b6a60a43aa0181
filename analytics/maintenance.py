"""ClickHouse upkeep: hourly rollups, retention by month, and the TTL kept in line with it.

Rollups are computed from `analytics_events FINAL` for closed hours by a scheduled task, never
by materialized views: a view sums each inserted block, so a replayed batch would count twice,
while `FINAL` collapses the replay first. Each run computes the closed hours not yet recorded
in `analytics_rollup_hours`, and computes the last `lookback_hours` closed hours again, so
events that reach ClickHouse late (the sink catching up after an outage) are counted.
A recomputed row replaces the previous one (ReplacingMergeTree(computed_at)), so reports
read `analytics_hourly FINAL`. Recorded hours are contiguous: reports read rollups for
hours before `rolled_up_until()` and raw events after it.

Retention: servers with table TTL (19.6 and later, chDB) delete expired rows themselves;
ClickHouse 18.16 has no TTL, so `partitions_drop_expired` drops every month that lies wholly
before the retention, on every server (on a TTL server those months are already empty).
`events_ttl_sync` sets the TTL to the configured retention where the server supports it, so
a changed setting or an upgraded server is followed without a new migration.

Django-free: the Celery tasks (analytics/tasks.py) call these with the process's backend and
the wall clock; tests pass their own clock.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

from analytics.clickhouse import AnalyticsBackend

logger = logging.getLogger(__name__)

# Table TTL (and ALTER ... MODIFY TTL) arrived in ClickHouse 19.6.
TTL_SINCE = (19, 6)
DEFAULT_RETENTION_DAYS = 90
DEFAULT_LOOKBACK_HOURS = 3
# Hours per INSERT ... SELECT: one statement per day of catch-up keeps each read to one or
# two monthly partitions and a first run over 90 days to ~90 statements.
ROLLUP_CHUNK_HOURS = 24

HOUR = timedelta(hours=1)
_PARTITION = re.compile(r"([0-9]{4})([0-9]{2})")
_TTL = re.compile(r"\bTTL timestamp \+ toIntervalDay\(([0-9]+)\)")

_ROLLUP_SQL = """
INSERT INTO analytics_hourly
    (hour, advertiser_id, campaign_id, creative_id, exchange, event_type, reason,
     events, price_micros, latency_us, computed_at)
SELECT
    toStartOfHour(timestamp) AS hour,
    advertiser_id, campaign_id, creative_id, exchange, event_type, reason,
    count(), sum(price_micros), sum(latency_us),
    toDateTime(%(computed_at)s, 'UTC')
FROM analytics_events FINAL
WHERE timestamp >= toDateTime(%(start)s, 'UTC') AND timestamp < toDateTime(%(end)s, 'UTC')
GROUP BY hour, advertiser_id, campaign_id, creative_id, exchange, event_type, reason
"""


def ttl_supported(server_version: tuple[int, ...]) -> bool:
    return server_version >= TTL_SINCE


def events_ttl_statement(retention_days: int) -> str:
    return (
        "ALTER TABLE analytics_events "
        f"MODIFY TTL timestamp + INTERVAL {int(retention_days)} DAY"
    )


def hour_floor(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("an aware datetime is required")
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _unix(moment: datetime) -> int:
    """Times go to ClickHouse as Unix seconds: no server time zone can shift them."""
    return int(moment.timestamp())


def rolled_up_until(*, backend: AnalyticsBackend) -> datetime | None:
    """The end of the last rolled-up hour: rollups hold every hour from the first one computed
    up to this instant (exclusive). None before the first rollup run."""
    ((hours, last),) = backend.query(
        "SELECT count(), toUnixTimestamp(max(hour)) FROM analytics_rollup_hours"
    )
    if hours == 0:
        return None
    return datetime.fromtimestamp(last, UTC) + HOUR


def _oldest_event_hour(backend: AnalyticsBackend, since: datetime) -> datetime | None:
    ((oldest,),) = backend.query(
        "SELECT toUnixTimestamp(min(timestamp)) FROM analytics_events "
        "WHERE timestamp >= toDateTime(%(since)s, 'UTC')",
        {"since": _unix(since)},
    )
    # min() of no rows is the zero DateTime, which `since` (within retention) always follows.
    if oldest < _unix(since):
        return None
    return hour_floor(datetime.fromtimestamp(oldest, UTC))


def rollup_hours(
    *,
    backend: AnalyticsBackend,
    now: datetime,
    lookback_hours: int = DEFAULT_LOOKBACK_HOURS,
    retention_days: int = DEFAULT_RETENTION_DAYS,
) -> list[datetime]:
    """Compute the hourly rollups that are due; returns the hours computed, oldest first.

    Due: every closed hour (ended by `now`) after the last recorded one, and the last
    `lookback_hours` closed hours again. With nothing recorded yet, from the oldest event's
    hour, but never further back than the retention (older rows are being deleted).
    The hours are recorded only after their rows are inserted, so a run that fails half-way
    leaves them due for the next run.
    """
    last_closed = hour_floor(now) - HOUR
    oldest_kept = hour_floor(now - timedelta(days=retention_days))
    start = rolled_up_until(backend=backend)
    if start is None:
        start = _oldest_event_hour(backend, oldest_kept)
    lookback_start = last_closed - HOUR * (lookback_hours - 1)
    start = lookback_start if start is None else min(start, lookback_start)
    start = max(start, oldest_kept)
    hours = []
    while start <= last_closed:
        hours.append(start)
        start += HOUR
    computed_at = now.astimezone(UTC).replace(microsecond=0)
    for index in range(0, len(hours), ROLLUP_CHUNK_HOURS):
        chunk = hours[index : index + ROLLUP_CHUNK_HOURS]
        backend.execute(
            _ROLLUP_SQL,
            {
                "start": _unix(chunk[0]),
                "end": _unix(chunk[-1] + HOUR),
                "computed_at": _unix(computed_at),
            },
        )
        backend.insert(
            "analytics_rollup_hours",
            ("hour", "computed_at"),
            [(hour, computed_at) for hour in chunk],
        )
    if hours:
        logger.info("rolled up %d hours, %s to %s", len(hours), hours[0], hours[-1])
    return hours


def _month_end(partition: str) -> datetime:
    match = _PARTITION.fullmatch(partition)
    if match is None:
        raise ValueError(f"unexpected analytics_events partition {partition!r}")
    year, month = int(match.group(1)), int(match.group(2))
    return datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def partitions_drop_expired(
    *, backend: AnalyticsBackend, now: datetime, retention_days: int
) -> list[str]:
    """Drop the monthly partitions of `analytics_events` whose whole month ended at least
    `retention_days` before `now`; returns their ids (`YYYYMM`), oldest first.

    A month still partly inside the retention is kept whole: the drop is monthly, so rows
    live up to a month longer than the retention on servers without TTL.
    """
    cutoff = now - timedelta(days=retention_days)
    rows = backend.query(
        "SELECT DISTINCT partition FROM system.parts "
        "WHERE database = %(database)s AND table = 'analytics_events' AND active "
        "ORDER BY partition",
        {"database": backend.database},
    )
    expired = [str(partition) for (partition,) in rows if _month_end(str(partition)) <= cutoff]
    for partition in expired:
        backend.execute(f"ALTER TABLE analytics_events DROP PARTITION {partition}")
        logger.info("dropped analytics_events partition %s (retention %d days)", partition,
                    retention_days)
    return expired


def events_ttl_sync(*, backend: AnalyticsBackend, retention_days: int) -> bool:
    """Make the TTL of `analytics_events` the retention, where the server has TTL; returns
    whether it changed. Changing it makes the server re-evaluate the TTL of every part (a
    mutation), which happens only when the setting changed or the server gained TTL."""
    if not ttl_supported(backend.server_version()):
        return False
    rows = backend.query(
        "SELECT engine_full FROM system.tables "
        "WHERE database = %(database)s AND name = 'analytics_events'",
        {"database": backend.database},
    )
    current = _TTL.search(str(rows[0][0])) if rows else None
    if current is not None and int(current.group(1)) == retention_days:
        return False
    backend.execute(events_ttl_statement(retention_days))
    logger.info("analytics_events TTL set to %d days", retention_days)
    return True
