"""ClickHouse DDL for `analytics_events`; becomes the first numbered migration later.

The same statement must run on chDB (current ClickHouse) and on ClickHouse 18.16 (Debian's
package), so it avoids what 18.16 lacks: no TTL clause (a scheduled task drops expired monthly
partitions instead), no DateTime64 (timestamps are whole seconds), no LowCardinality (18.16
needs a setting for it), no Map (attributes are two parallel arrays).
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def analytics_events_ddl(database: str) -> str:
    """CREATE TABLE IF NOT EXISTS for `database`.analytics_events, columns in events.COLUMNS."""
    if not _IDENTIFIER.fullmatch(database):
        raise ValueError(f"invalid database name {database!r}")
    return f"""
CREATE TABLE IF NOT EXISTS {database}.analytics_events
(
    event_id UUID,
    event_type String,
    timestamp DateTime('UTC'),
    node String,
    schema_version UInt16,
    request_id String,
    impression_id String,
    campaign_id String,
    creative_id String,
    advertiser_id String,
    user_id String,
    offer_id String,
    exchange String,
    partner String,
    price_micros Int64,
    currency String,
    latency_us Int64,
    reason String,
    attribute_keys Array(String),
    attribute_values Array(String)
)
-- Replacing: rows with the same sort key collapse, so a replayed batch counts once with FINAL.
ENGINE = ReplacingMergeTree()
-- Monthly: retention drops whole months, and date-bounded reports skip the other months.
PARTITION BY toYYYYMM(timestamp)
-- Reports filter by type, then campaign, then time; event_id last makes the key unique per
-- event, so deduplication merges only true replays.
ORDER BY (event_type, campaign_id, timestamp, event_id)
""".strip()
