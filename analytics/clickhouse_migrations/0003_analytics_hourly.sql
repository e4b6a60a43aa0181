-- Hourly rollups of analytics_events, computed from `analytics_events FINAL` for closed hours
-- by a scheduled task (analytics.maintenance.rollup_hours), never by a materialized view: a
-- view adds up each inserted block, so a replayed batch would count twice.
CREATE TABLE IF NOT EXISTS analytics_hourly
(
    hour DateTime('UTC'),
    advertiser_id String,
    campaign_id String,
    creative_id String,
    exchange String,
    event_type String,
    reason String,
    events UInt64,
    price_micros Int64, -- sum of the group's events
    latency_us Int64, -- sum of the group's events
    computed_at DateTime('UTC')
)
-- Replacing by computed_at: recomputing an hour (late events within the lookback) inserts
-- new rows with the same key, and the newest computation wins; reports read it with FINAL.
ENGINE = ReplacingMergeTree(computed_at)
-- Monthly, like the events: reports over a date range read only its months.
PARTITION BY toYYYYMM(hour)
-- advertiser_id, campaign_id, hour: reports scope to an advertiser and campaign, then a range
-- of hours. The rest is the grouping of a rollup row, so the key is unique per group and
-- hour, which is what makes a recomputed row replace the old one.
ORDER BY (advertiser_id, campaign_id, hour, creative_id, exchange, event_type, reason);

-- The hours rolled up, so reports know where rollups end and raw events begin. A row per
-- hour (under nine thousand a year): no partitions; sorted by hour, the only lookup.
-- Replacing by computed_at: a recomputed hour keeps one row.
CREATE TABLE IF NOT EXISTS analytics_rollup_hours
(
    hour DateTime('UTC'),
    computed_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
ORDER BY hour;
