-- One row per analytics event; the columns are analytics/events.py COLUMNS, in that order.
-- Runs on ClickHouse 18.16 and on current releases (chDB) alike, so it avoids what 18.16
-- lacks: no TTL here (0002 adds it where the server has it), no DateTime64 (whole seconds),
-- no LowCardinality (18.16 needs a setting for it), no Map (attributes are two arrays).
CREATE TABLE IF NOT EXISTS analytics_events
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
-- Replacing: rows with the same sort key collapse, so a replayed batch (the same events,
-- event_id included) counts once in queries with FINAL and in the rollups computed from it.
ENGINE = ReplacingMergeTree()
-- Monthly: retention drops whole months where the server has no TTL, and reports and rollups
-- bounded in time read only the months they cover. Months keep partitions few and large
-- (four live ones at 90 days), as MergeTree wants.
PARTITION BY toYYYYMM(timestamp)
-- Reports filter by advertiser, campaign and a time range, and group by event type, reason,
-- creative and exchange.
-- advertiser_id, campaign_id: every marketer-facing report is scoped to one advertiser and
-- mostly one campaign, so the key prefix selects one contiguous run of granules. Events
-- without a campaign (bid requests, no-bids, loyalty, ingest) have both empty and sort
-- together, which is how the platform-wide no-bid reports read them.
-- event_type: a few dozen values; a report of one type (wins, clicks) reads one sub-range,
-- one grouped by type reads a range per type.
-- timestamp: within a (advertiser, campaign, type) range rows are in time order, so a date
-- range is an index range too; the rollup, filtering on time alone, still skips granules.
-- reason, creative_id, exchange are grouped on after the read, so they stay out of the key.
-- event_id last makes the key unique per event: only true replays collapse.
ORDER BY (advertiser_id, campaign_id, event_type, timestamp, event_id);
