"""Reports as tables: one set of columns for CSV files, the terminal and the emailed summary.

Money stays a `Decimal` rendered with its six decimals (micros), never a float. Spend and
eCPM get one column per currency present in the report (`spend_USD`, `ecpm_USD`), so a
spreadsheet sums a column without parsing units.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from analytics.reports import (
    Grain,
    NoBidRow,
    PerformanceReport,
    PerformanceRow,
    ReportKind,
)
from analytics.summaries import DspRow, LoyaltyRow

ReportResult = PerformanceReport | list[NoBidRow] | list[LoyaltyRow] | list[DspRow]
TOTAL = "total"


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]


def _text(value: object) -> str:
    return "" if value is None else str(value)


def bucket_text(bucket: datetime | None, grain: Grain) -> str:
    if bucket is None:
        return TOTAL
    return f"{bucket:%Y-%m-%d %H:00}" if grain is Grain.HOUR else f"{bucket:%Y-%m-%d}"


def _performance_table(report: PerformanceReport, grain: Grain, key_name: str,
                       labels: Mapping[str, str]) -> Table:
    currencies = sorted(report.total.spend_micros)
    headers = [("period" if grain is Grain.DAY else "hour"), key_name, "name", "requests",
               "bids", "wins", "win_rate", "impressions", "clicks", "ctr", "conversions",
               *[f"spend_{currency or 'unknown'}" for currency in currencies],
               *[f"ecpm_{currency or 'unknown'}" for currency in currencies],
               "no_bids", "no_bid_reasons", "latency_p50_us", "latency_p95_us",
               "latency_p99_us"]

    def cells(row: PerformanceRow) -> list[str]:
        spend, ecpm = row.spend, row.ecpm
        reasons = "; ".join(f"{reason or 'unknown'}={count}" for reason, count in sorted(
            row.no_bid_reasons.items(), key=lambda item: (-item[1], item[0])))
        return [bucket_text(row.bucket, grain), row.key, labels.get(row.key, ""),
                str(row.requests), str(row.bids), str(row.wins), _text(row.win_rate),
                str(row.impressions), str(row.clicks), _text(row.ctr), str(row.conversions),
                *[_text(spend.get(currency)) for currency in currencies],
                *[_text(ecpm.get(currency)) for currency in currencies],
                str(row.no_bids), reasons, _text(row.latency_p50_us),
                _text(row.latency_p95_us), _text(row.latency_p99_us)]

    return Table(headers, [cells(row) for row in [*report.rows, report.total]])


def report_table(*, kind: ReportKind, result: ReportResult, grain: Grain, key_name: str,
                 labels: Mapping[str, str]) -> Table:
    """`key_name` heads the key column (campaign, exchange, ...); `labels` names the keys."""
    period = "period" if grain is Grain.DAY else "hour"
    if kind is ReportKind.PERFORMANCE:
        assert isinstance(result, PerformanceReport)
        return _performance_table(result, grain, key_name, labels)
    assert isinstance(result, list)
    if kind is ReportKind.NO_BID_REASONS:
        return Table([period, key_name, "name", "reason", "count"], [
            [bucket_text(row.bucket, grain), row.key, labels.get(row.key, ""), row.reason,
             str(row.count)] for row in result if isinstance(row, NoBidRow)])
    if kind is ReportKind.LOYALTY:
        return Table([period, "advertiser", "name", "earned", "earned_points", "redeemed",
                      "redeemed_points", "tier_changes"], [
            [bucket_text(row.bucket, grain), row.key, labels.get(row.key, ""), str(row.earned),
             str(row.earned_points), str(row.redeemed), str(row.redeemed_points),
             str(row.tier_changes)] for row in result if isinstance(row, LoyaltyRow)])
    return Table([period, "partner", "sent", "won", "lost", "timeouts", "win_rate"], [
        [bucket_text(row.bucket, grain), row.key, str(row.sent), str(row.won), str(row.lost),
         str(row.timeouts), _text(row.win_rate)] for row in result if isinstance(row, DspRow)])


def table_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.headers)
    writer.writerows(table.rows)
    return buffer.getvalue()


def table_text(table: Table, *, max_width: int = 40) -> str:
    """Aligned columns for a terminal; long cells are cut to `max_width` characters."""

    def cut(cell: str) -> str:
        return cell if len(cell) <= max_width else cell[: max_width - 1] + "…"

    lines: Sequence[list[str]] = [table.headers, *table.rows]
    cells = [[cut(cell) for cell in line] for line in lines]
    widths = [max(len(line[column]) for line in cells) for column in range(len(table.headers))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
            .rstrip() for line in cells]
    text.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(text) + "\n"
