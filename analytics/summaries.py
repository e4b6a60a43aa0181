"""Loyalty and DSP summaries: counts (and loyalty points) per advertiser or partner.

They read raw events (FINAL) for the whole range: the hourly rollup keeps neither the
`points` attribute nor the partner. Same scope, buckets and SQL rules as `analytics.reports`.

Django-free, like the report queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analytics.clickhouse import AnalyticsBackend
from analytics.reports import (
    END,
    START,
    ReportScope,
    bucket_sql,
    bucket_start,
    ratio,
    scope_filters,
    scope_params,
)

_LOYALTY_TYPES = ("loyalty_earn", "loyalty_redeem", "loyalty_tier_change")
_DSP_TYPES = ("dsp_sent", "dsp_won", "dsp_lost", "dsp_timeout")


@dataclass(kw_only=True)
class LoyaltyRow:
    """Per advertiser; points are the `points` attribute of the loyalty events."""

    bucket: datetime
    key: str
    earned: int = 0
    earned_points: int = 0
    redeemed: int = 0
    redeemed_points: int = 0
    tier_changes: int = 0


@dataclass(kw_only=True)
class DspRow:
    """Per partner DSP: requests sent, and how each ended."""

    bucket: datetime
    key: str
    sent: int = 0
    won: int = 0
    lost: int = 0
    timeouts: int = 0

    @property
    def win_rate(self) -> float | None:
        return ratio(self.won, self.sent)


def _raw_counts(backend: AnalyticsBackend, scope: ReportScope, *, key: str,
                types: Iterable[str], value: str) -> list[tuple[Any, ...]]:
    params = scope_params(scope)
    params["types"] = tuple(types)
    where = scope_filters(scope, params)
    sql = f"""
SELECT {bucket_sql(scope, "timestamp")} AS bucket, {key} AS key, event_type,
       count() AS events, sum({value}) AS value
FROM analytics_events FINAL
WHERE timestamp >= {START} AND timestamp < {END} AND event_type IN %(types)s{where}
GROUP BY bucket, key, event_type
ORDER BY bucket, key, event_type
"""
    return backend.query(sql, params)


def loyalty_report(*, backend: AnalyticsBackend, scope: ReportScope) -> list[LoyaltyRow]:
    """Earn, redeem and tier-change counts and points per advertiser (whatever `group_by`)."""
    points = "toInt64OrZero(arrayElement(attribute_values, indexOf(attribute_keys, 'points')))"
    rows: dict[tuple[datetime, str], LoyaltyRow] = {}
    for bucket, key, event_type, events, value in _raw_counts(
            backend, scope, key="advertiser_id", types=_LOYALTY_TYPES, value=points):
        start = bucket_start(bucket)
        row = rows.setdefault((start, key), LoyaltyRow(bucket=start, key=key))
        if event_type == "loyalty_earn":
            row.earned += events
            row.earned_points += value
        elif event_type == "loyalty_redeem":
            row.redeemed += events
            row.redeemed_points += value
        else:
            row.tier_changes += events
    return list(rows.values())


def dsp_report(*, backend: AnalyticsBackend, scope: ReportScope) -> list[DspRow]:
    """Sent, won, lost and timed-out requests per partner DSP (whatever `group_by`)."""
    fields = {"dsp_sent": "sent", "dsp_won": "won", "dsp_lost": "lost",
              "dsp_timeout": "timeouts"}
    rows: dict[tuple[datetime, str], DspRow] = {}
    for bucket, key, event_type, events, _ in _raw_counts(
            backend, scope, key="partner", types=_DSP_TYPES, value="price_micros"):
        start = bucket_start(bucket)
        row = rows.setdefault((start, key), DspRow(bucket=start, key=key))
        setattr(row, fields[event_type], getattr(row, fields[event_type]) + events)
    return list(rows.values())
