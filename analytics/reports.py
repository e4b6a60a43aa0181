"""Report queries over ClickHouse: campaign performance, no-bid reasons, loyalty and DSP.

Numbers are exact whether or not the hourly rollup ran: the hours listed in
`analytics_rollup_hours` are read from `analytics_hourly`, every other hour of the range from
`analytics_events`, both with FINAL, so a replayed batch or a recomputed rollup counts once.
Latency percentiles are not in the rollup, so they read raw events (FINAL) for the whole
range; so do the loyalty and DSP summaries (`analytics.summaries`).

The SQL runs on ClickHouse 18.16 and on chDB alike: UNION ALL inside a subquery, IN
subqueries, at most one JOIN per query, and `transform` to map campaigns to their
currencies. Sums and counts come back per bucket and key; rows and ratios are built here, in
Python, where the money stays integer micros until it becomes a `Decimal`.

Django-free: the caller decides which advertisers a user may see and passes their ids
(`ReportScope.advertiser_ids`); the filter is applied in SQL, never after the fact.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from analytics.clickhouse import AnalyticsBackend

MICROS = Decimal("0.000001")
START = "toDateTime(%(start)s, 'UTC')"
END = "toDateTime(%(end)s, 'UTC')"


class ReportKind(enum.StrEnum):
    PERFORMANCE = "campaign_performance"
    NO_BID_REASONS = "no_bid_reasons"
    LOYALTY = "loyalty"
    DSP = "dsp"


class Grain(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"


class GroupBy(enum.StrEnum):
    ADVERTISER = "advertiser"
    CAMPAIGN = "campaign"
    CREATIVE = "creative"
    EXCHANGE = "exchange"


# The longest range a report may span, in days: an hourly report of a year is 8,760 buckets
# per key, more than a page or a chart can show.
MAX_DAYS = {Grain.HOUR: 31, Grain.DAY: 366}

_KEY_COLUMNS = {
    GroupBy.ADVERTISER: "advertiser_id",
    GroupBy.CAMPAIGN: "campaign_id",
    GroupBy.CREATIVE: "creative_id",
    GroupBy.EXCHANGE: "exchange",
}
# Event type -> the counter it increments in a performance row.
_COUNTERS = {
    "bid_request": "requests",
    "bid": "bids",
    "no_bid": "no_bids",
    "win": "wins",
    "loss": "losses",
    "impression": "impressions",
    "click": "clicks",
    "conversion": "conversions",
}
_BILLING = "billing"


def range_errors(*, start: date, end: date, grain: Grain) -> dict[str, str]:
    """What is wrong with a range of days (both included), by the field to fix."""
    if end < start:
        return {"end": "The end must not be before the start."}
    if (end - start).days + 1 > MAX_DAYS[grain]:
        return {"end": f"A report by {grain.value} spans at most {MAX_DAYS[grain]} days."}
    return {}


@dataclass(frozen=True, kw_only=True)
class ReportScope:
    """What a report covers: `[start, end)` in whole hours (aware), how rows are keyed and
    bucketed, and which advertisers and campaigns (event ids, `str(pk)`) it may read.
    `advertiser_ids=None` reads every advertiser, requests not tied to one included."""

    start: datetime
    end: datetime
    grain: Grain = Grain.DAY
    group_by: GroupBy = GroupBy.CAMPAIGN
    advertiser_ids: frozenset[str] | None = None
    campaign_ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a report range must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("a report range must end after it starts")


def ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 6) if denominator else None


def micros_to_units(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-6).quantize(MICROS)


@dataclass(kw_only=True)
class PerformanceRow:
    """One bucket of one key (`bucket=None`: the whole range). Requests (bid_request events)
    name no campaign, so only the key "" (and exchanges) count them. Spend is per currency,
    from billing events; the no-bid count and its reasons come from no_bid events; latency
    is that of the requests the row's bids answered."""

    bucket: datetime | None
    key: str
    requests: int = 0
    bids: int = 0
    no_bids: int = 0
    wins: int = 0
    losses: int = 0
    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    spend_micros: dict[str, int] = field(default_factory=dict)
    no_bid_reasons: dict[str, int] = field(default_factory=dict)
    latency_p50_us: int | None = None
    latency_p95_us: int | None = None
    latency_p99_us: int | None = None

    @property
    def spend(self) -> dict[str, Decimal]:
        return {currency: micros_to_units(micros)
                for currency, micros in sorted(self.spend_micros.items())}

    @property
    def ecpm(self) -> dict[str, Decimal]:
        """Spend per thousand impressions, per currency; empty without impressions."""
        if not self.impressions:
            return {}
        return {currency: (Decimal(micros * 1000) / self.impressions).scaleb(-6).quantize(
            MICROS, rounding=ROUND_HALF_UP) for currency, micros in sorted(
            self.spend_micros.items())}

    @property
    def ctr(self) -> float | None:
        return ratio(self.clicks, self.impressions)

    @property
    def win_rate(self) -> float | None:
        return ratio(self.wins, self.bids)

    def add(self, other: PerformanceRow) -> None:
        for name in _COUNTERS.values():
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for currency, micros in other.spend_micros.items():
            self.spend_micros[currency] = self.spend_micros.get(currency, 0) + micros
        for reason, count in other.no_bid_reasons.items():
            self.no_bid_reasons[reason] = self.no_bid_reasons.get(reason, 0) + count


@dataclass(frozen=True)
class PerformanceReport:
    rows: list[PerformanceRow]
    total: PerformanceRow


@dataclass(frozen=True, kw_only=True)
class NoBidRow:
    bucket: datetime
    key: str
    reason: str
    count: int


def bucket_start(value: datetime | date) -> datetime:
    """Date buckets (day grain) and hour buckets as aware UTC datetimes."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def bucket_sql(scope: ReportScope, column: str) -> str:
    return f"toStartOfHour({column})" if scope.grain is Grain.HOUR else f"toDate({column})"


def scope_filters(scope: ReportScope, params: dict[str, Any]) -> str:
    """The advertiser and campaign filter for any of the three tables, with its params."""
    clauses = []
    if scope.advertiser_ids is not None:
        # An empty tuple is not valid SQL: a user who sees no advertiser matches nothing.
        params["advertiser_ids"] = tuple(sorted(scope.advertiser_ids)) or ("",)
        clauses.append("advertiser_id IN %(advertiser_ids)s")
        if not scope.advertiser_ids:
            clauses.append("0")
    if scope.campaign_ids is not None:
        params["campaign_ids"] = tuple(sorted(scope.campaign_ids)) or ("",)
        clauses.append("campaign_id IN %(campaign_ids)s")
    return "".join(f" AND {clause}" for clause in clauses)


def scope_params(scope: ReportScope) -> dict[str, Any]:
    """Unix seconds, read with `toDateTime(..., 'UTC')`: a datetime parameter would be
    rendered in the server's time zone and read back in the column's."""
    return {"start": int(scope.start.timestamp()), "end": int(scope.end.timestamp())}


def _combined_counts(backend: AnalyticsBackend, scope: ReportScope, *, types: Sequence[str],
                     currencies: Mapping[str, str]) -> list[tuple[Any, ...]]:
    """(bucket, key, event_type, reason, currency, events, price_micros) over the range: the
    rollup for rolled-up hours, raw events for the others. Reason is kept for no_bid events
    only and currency (the campaign's) for billing events only, so rows stay few."""
    params = scope_params(scope)
    params["types"] = tuple(types)
    # A sentinel pair keeps the arrays typed when no campaign has a currency.
    params["currency_ids"] = ["", *currencies]
    params["currency_codes"] = ["", *currencies.values()]
    where = scope_filters(scope, params)
    rolled = ("SELECT hour FROM analytics_rollup_hours FINAL "
              f"WHERE hour >= {START} AND hour < {END}")
    sql = f"""
SELECT {bucket_sql(scope, "hour")} AS bucket, {_KEY_COLUMNS[scope.group_by]} AS key,
       event_type,
       if(event_type = 'no_bid', reason, '') AS no_bid_reason,
       if(event_type = '{_BILLING}',
          transform(campaign_id, %(currency_ids)s, %(currency_codes)s, ''), '') AS currency,
       sum(events) AS event_count, sum(price_micros) AS price_total
FROM (
    SELECT hour, advertiser_id, campaign_id, creative_id, exchange, event_type, reason,
           events, price_micros
    FROM analytics_hourly FINAL
    WHERE hour >= {START} AND hour < {END} AND event_type IN %(types)s{where}
      AND hour IN ({rolled})
    UNION ALL
    SELECT toStartOfHour(timestamp) AS hour, advertiser_id, campaign_id, creative_id,
           exchange, event_type, reason, count() AS events, sum(price_micros) AS price_micros
    FROM analytics_events FINAL
    WHERE timestamp >= {START} AND timestamp < {END} AND event_type IN %(types)s{where}
      AND toStartOfHour(timestamp) NOT IN ({rolled})
    GROUP BY hour, advertiser_id, campaign_id, creative_id, exchange, event_type, reason
)
GROUP BY bucket, key, event_type, no_bid_reason, currency
"""
    return backend.query(sql, params)


def _latencies(backend: AnalyticsBackend, scope: ReportScope, *, grouped: bool
               ) -> dict[tuple[datetime, str] | None, tuple[int, int, int]]:
    """p50/p95/p99 bid latency in whole microseconds, per (bucket, key) or for the range.

    Latency is on `bid_request` events (the whole request, answered or not). Without an
    advertiser or campaign scope, per exchange and for the total, that is every request seen.
    Otherwise it is the requests the row's campaigns bid on: bids name their campaign and
    carry the request's id, so the requests are matched by `request_id` (one JOIN per row
    key, an IN subquery for the total).
    """
    params = scope_params(scope)
    where = scope_filters(scope, params)
    quantiles = "quantiles(0.5, 0.95, 0.99)(latency_us) AS latency, count() AS requests"
    in_range = f"timestamp >= {START} AND timestamp < {END}"
    unrestricted = scope.advertiser_ids is None and scope.campaign_ids is None
    bids = f"FROM analytics_events FINAL WHERE event_type = 'bid' AND {in_range}{where}"
    if not grouped:
        matched = "" if unrestricted else f" AND request_id IN (SELECT request_id {bids})"
        sql = (f"SELECT {quantiles} FROM analytics_events FINAL "
               f"WHERE event_type = 'bid_request' AND {in_range}{matched} HAVING requests > 0")
    elif unrestricted and scope.group_by is GroupBy.EXCHANGE:
        sql = (f"SELECT {bucket_sql(scope, 'timestamp')} AS bucket, exchange AS key, "
               f"{quantiles} FROM analytics_events FINAL "
               f"WHERE event_type = 'bid_request' AND {in_range} "
               "GROUP BY bucket, key HAVING requests > 0")
    else:
        sql = f"""
SELECT {bucket_sql(scope, "timestamp")} AS bucket, key, {quantiles}
FROM (
    SELECT request_id, timestamp, latency_us FROM analytics_events FINAL
    WHERE event_type = 'bid_request' AND {in_range}
) AS seen
ALL INNER JOIN (
    SELECT DISTINCT request_id, {_KEY_COLUMNS[scope.group_by]} AS key {bids}
) AS bid_keys USING request_id
GROUP BY bucket, key
HAVING requests > 0
"""
    result: dict[tuple[datetime, str] | None, tuple[int, int, int]] = {}
    for row in backend.query(sql, params):
        p50, p95, p99 = (round(value) for value in row[-2])
        result[(bucket_start(row[0]), row[1]) if grouped else None] = (p50, p95, p99)
    return result


def performance_report(*, backend: AnalyticsBackend, scope: ReportScope,
                       currencies: Mapping[str, str]) -> PerformanceReport:
    """Requests, bids, wins, impressions, clicks, conversions, spend and latency per bucket
    and key, and the same for the whole range. `currencies` maps campaign ids to the
    currency their billing prices are in."""
    rows: dict[tuple[datetime, str], PerformanceRow] = {}
    types = [*_COUNTERS, _BILLING]
    for bucket, key, event_type, reason, currency, events, price_micros in _combined_counts(
            backend, scope, types=types, currencies=currencies):
        start = bucket_start(bucket)
        row = rows.setdefault((start, key), PerformanceRow(bucket=start, key=key))
        if event_type == _BILLING:
            row.spend_micros[currency] = row.spend_micros.get(currency, 0) + price_micros
            continue
        counter = _COUNTERS[event_type]
        setattr(row, counter, getattr(row, counter) + events)
        if event_type == "no_bid":
            row.no_bid_reasons[reason] = row.no_bid_reasons.get(reason, 0) + events
    for position, (p50, p95, p99) in _latencies(backend, scope, grouped=True).items():
        assert position is not None
        row = rows.setdefault(position, PerformanceRow(bucket=position[0], key=position[1]))
        row.latency_p50_us, row.latency_p95_us, row.latency_p99_us = p50, p95, p99
    total = PerformanceRow(bucket=None, key="")
    for row in rows.values():
        total.add(row)
    overall = _latencies(backend, scope, grouped=False).get(None)
    if overall is not None:
        total.latency_p50_us, total.latency_p95_us, total.latency_p99_us = overall
    return PerformanceReport(rows=[rows[position] for position in sorted(rows)], total=total)


def no_bid_report(*, backend: AnalyticsBackend, scope: ReportScope) -> list[NoBidRow]:
    """How many no_bid events each reason had, per bucket and key, most frequent first."""
    counts = _combined_counts(backend, scope, types=["no_bid"], currencies={})
    rows = [NoBidRow(bucket=bucket_start(bucket), key=key, reason=reason, count=events)
            for bucket, key, _, reason, _, events, _ in counts]
    return sorted(rows, key=lambda row: (row.bucket, row.key, -row.count, row.reason))
