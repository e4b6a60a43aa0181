"""Report numbers equal what was inserted, on chDB and on ClickHouse 18.16, whether the hours
were rolled up or not, with a replayed event counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from analytics.clickhouse import AnalyticsBackend
from analytics.events import Event, EventType
from analytics.reports import (
    Grain,
    GroupBy,
    NoBidRow,
    PerformanceRow,
    ReportScope,
    no_bid_report,
    performance_report,
)
from analytics.summaries import DspRow, LoyaltyRow, dsp_report, loyalty_report
from tests.analytics.report_fixtures import backend, events_insert, hours_roll_up, make_event

__all__ = ["backend"]

DAY = datetime(2024, 5, 17, tzinfo=UTC)
TEN = DAY + timedelta(hours=10)
ELEVEN = DAY + timedelta(hours=11)
CURRENCIES = {"11": "USD", "12": "USD", "13": "EUR"}


def _campaign_event(event_type: EventType, at: datetime, campaign: str, **fields: object
                    ) -> Event:
    advertiser = "2" if campaign == "13" else "1"
    return make_event(event_type, at, campaign_id=campaign, advertiser_id=advertiser,
                      creative_id=str(int(campaign) + 10), exchange="xa", **fields)


def _request(at: datetime, request: str, exchange: str, latency_us: int,
             no_bid: str = "") -> list[Event]:
    """A bid request as the bidder records it: the request, then a no-bid if it had one."""
    events = [make_event(EventType.BID_REQUEST, at, request_id=request, exchange=exchange,
                         latency_us=latency_us, reason=no_bid)]
    if no_bid:
        events.append(make_event(EventType.NO_BID, at, request_id=request, exchange=exchange,
                                 reason=no_bid))
    return events


def _day_of_events() -> tuple[list[Event], Event]:
    """Two hours of one day; the second value is a billing event that is replayed."""
    at = TEN + timedelta(minutes=5)
    events = [*_request(at, "r1", "xa", 1000), *_request(at, "r2", "xa", 2000),
              *_request(at, "r3", "xa", 3000),
              *_request(at, "r4", "xb", 4000, no_bid="budget_exhausted"),
              *_request(at, "r5", "xa", 5000, no_bid="no_eligible_campaign"),
              *_request(at, "r6", "xa", 6000, no_bid="no_eligible_campaign")]
    events += [_campaign_event(EventType.BID, at, "11", request_id=request)
               for request in ("r1", "r2", "r3")]
    events.append(_campaign_event(EventType.BID, at, "13", request_id="r2"))
    events += [_campaign_event(EventType.WIN, at, "11", price_micros=1_400_000),
               _campaign_event(EventType.WIN, at, "11", price_micros=2_400_000),
               _campaign_event(EventType.WIN, at, "13", price_micros=2_900_000),
               _campaign_event(EventType.LOSS, at, "11", reason="102")]
    replayed = _campaign_event(EventType.BILLING, at, "11", price_micros=1_500_000,
                               currency="USD")
    events += [replayed,
               _campaign_event(EventType.BILLING, at, "11", price_micros=2_500_000,
                               currency="USD"),
               _campaign_event(EventType.BILLING, at, "13", price_micros=3_000_000,
                               currency="EUR")]
    events += [_campaign_event(EventType.IMPRESSION, at, "11"),
               _campaign_event(EventType.IMPRESSION, at, "11"),
               _campaign_event(EventType.IMPRESSION, at, "13"),
               _campaign_event(EventType.CLICK, at, "11"),
               _campaign_event(EventType.CONVERSION, at, "11")]
    later = ELEVEN + timedelta(minutes=59, seconds=59)
    events += [*_request(later, "r7", "xa", 1100),
               _campaign_event(EventType.BID, later, "11", request_id="r7"),
               _campaign_event(EventType.WIN, later, "11", price_micros=900_000),
               _campaign_event(EventType.BILLING, later, "11", price_micros=1_000_000,
                               currency="USD"),
               _campaign_event(EventType.IMPRESSION, later, "11")]
    # Outside the range: the next day.
    tomorrow = DAY + timedelta(days=1)
    events += [*_request(tomorrow, "r8", "xa", 1),
               _campaign_event(EventType.BID, tomorrow, "11", request_id="r8")]
    return events, replayed


def _insert_day(backend: AnalyticsBackend) -> None:
    events, replayed = _day_of_events()
    events_insert(backend, events)
    events_insert(backend, [replayed])


def _scope(**fields: object) -> ReportScope:
    values: dict[str, object] = {"start": DAY, "end": DAY + timedelta(days=1)}
    return ReportScope(**(values | fields))  # type: ignore[arg-type]


@pytest.mark.parametrize("rolled_up", [[], [TEN], [TEN, ELEVEN]],
                         ids=["raw", "partly-rolled-up", "rolled-up"])
def test_campaign_performance_per_day_counts_each_event_once(
        backend: AnalyticsBackend, rolled_up: list[datetime]) -> None:
    _insert_day(backend)
    hours_roll_up(backend, rolled_up)

    report = performance_report(backend=backend, scope=_scope(), currencies=CURRENCIES)

    assert report.rows == [
        PerformanceRow(bucket=DAY, key="", requests=7, no_bids=3,
                       no_bid_reasons={"no_eligible_campaign": 2, "budget_exhausted": 1}),
        PerformanceRow(bucket=DAY, key="11", bids=4, wins=3, losses=1, impressions=3, clicks=1,
                       conversions=1, spend_micros={"USD": 5_000_000}, latency_p50_us=1550,
                       latency_p95_us=2850, latency_p99_us=2970),
        PerformanceRow(bucket=DAY, key="13", bids=1, wins=1, impressions=1,
                       spend_micros={"EUR": 3_000_000}, latency_p50_us=2000,
                       latency_p95_us=2000, latency_p99_us=2000),
    ]
    campaign = report.rows[1]
    assert campaign.spend == {"USD": Decimal("5.000000")}
    assert campaign.ecpm == {"USD": Decimal("1666.666667")}
    assert (campaign.ctr, campaign.win_rate) == (0.333333, 0.75)
    assert report.total == PerformanceRow(
        bucket=None, key="", requests=7, bids=5, no_bids=3, wins=4, losses=1, impressions=4,
        clicks=1, conversions=1, spend_micros={"USD": 5_000_000, "EUR": 3_000_000},
        no_bid_reasons={"no_eligible_campaign": 2, "budget_exhausted": 1},
        latency_p50_us=3000, latency_p95_us=5700, latency_p99_us=5940)
    assert report.total.spend == {"EUR": Decimal("3.000000"), "USD": Decimal("5.000000")}


@pytest.mark.parametrize("rolled_up", [[], [TEN, ELEVEN]], ids=["raw", "rolled-up"])
def test_performance_per_hour_and_exchange_takes_latency_from_requests(
        backend: AnalyticsBackend, rolled_up: list[datetime]) -> None:
    _insert_day(backend)
    hours_roll_up(backend, rolled_up)

    report = performance_report(backend=backend, scope=_scope(grain=Grain.HOUR,
                                                              group_by=GroupBy.EXCHANGE),
                                currencies=CURRENCIES)

    assert [(row.bucket, row.key, row.requests, row.bids, row.wins, row.no_bids,
             row.spend_micros, row.latency_p50_us) for row in report.rows] == [
        (TEN, "xa", 5, 4, 3, 2, {"USD": 4_000_000, "EUR": 3_000_000}, 3000),
        (TEN, "xb", 1, 0, 0, 1, {}, 4000),
        (ELEVEN, "xa", 1, 1, 1, 0, {"USD": 1_000_000}, 1100),
    ]
    assert (report.total.latency_p50_us, report.total.latency_p99_us) == (3000, 5940)


def test_an_advertiser_scope_reads_only_that_advertisers_events(
        backend: AnalyticsBackend) -> None:
    _insert_day(backend)
    hours_roll_up(backend, [TEN])

    report = performance_report(backend=backend,
                                scope=_scope(advertiser_ids=frozenset({"2"}),
                                             group_by=GroupBy.ADVERTISER),
                                currencies=CURRENCIES)
    nothing = performance_report(backend=backend, scope=_scope(advertiser_ids=frozenset()),
                                 currencies=CURRENCIES)
    per_exchange = performance_report(backend=backend,
                                      scope=_scope(advertiser_ids=frozenset({"1"}),
                                                   group_by=GroupBy.EXCHANGE),
                                      currencies=CURRENCIES)

    assert [(row.key, row.bids, row.wins, row.spend_micros, row.latency_p50_us)
            for row in report.rows] == [("2", 1, 1, {"EUR": 3_000_000}, 2000)]
    assert (report.total.requests, report.total.latency_p50_us) == (0, 2000)
    assert (nothing.rows, nothing.total) == ([], PerformanceRow(bucket=None, key=""))
    assert [(row.key, row.requests, row.bids, row.latency_p50_us)
            for row in per_exchange.rows] == [("xa", 0, 4, 1550)]
    assert per_exchange.total.latency_p99_us == 2970


def test_a_campaign_scope_groups_by_creative(backend: AnalyticsBackend) -> None:
    _insert_day(backend)

    report = performance_report(backend=backend,
                                scope=_scope(campaign_ids=frozenset({"11"}),
                                             group_by=GroupBy.CREATIVE, grain=Grain.HOUR),
                                currencies=CURRENCIES)

    assert [(row.bucket, row.key, row.bids, row.impressions, row.spend, row.latency_p50_us)
            for row in report.rows] == [
        (TEN, "21", 3, 2, {"USD": Decimal("4.000000")}, 2000),
        (ELEVEN, "21", 1, 1, {"USD": Decimal("1.000000")}, 1100),
    ]


def test_a_campaign_without_a_known_currency_reports_spend_under_an_empty_code(
        backend: AnalyticsBackend) -> None:
    _insert_day(backend)

    report = performance_report(backend=backend, scope=_scope(), currencies={})

    assert report.total.spend_micros == {"": 8_000_000}


@pytest.mark.parametrize("rolled_up", [[], [TEN]], ids=["raw", "rolled-up"])
def test_no_bid_reasons_per_exchange(backend: AnalyticsBackend,
                                     rolled_up: list[datetime]) -> None:
    _insert_day(backend)
    hours_roll_up(backend, rolled_up)

    rows = no_bid_report(backend=backend, scope=_scope(group_by=GroupBy.EXCHANGE))

    assert rows == [
        NoBidRow(bucket=DAY, key="xa", reason="no_eligible_campaign", count=2),
        NoBidRow(bucket=DAY, key="xb", reason="budget_exhausted", count=1),
    ]


def test_loyalty_summary_counts_events_and_points(backend: AnalyticsBackend) -> None:
    earn = make_event(EventType.LOYALTY_EARN, TEN, advertiser_id="1",
                      attributes={"points": "120", "program": "7"})
    events_insert(backend, [
        earn,
        make_event(EventType.LOYALTY_EARN, TEN, advertiser_id="1", attributes={"points": "30"}),
        make_event(EventType.LOYALTY_REDEEM, ELEVEN, advertiser_id="1",
                   attributes={"points": "100"}),
        make_event(EventType.LOYALTY_TIER_CHANGE, ELEVEN, advertiser_id="1",
                   attributes={"tier": "gold"}),
        make_event(EventType.LOYALTY_EARN, TEN, advertiser_id="2", attributes={"points": "5"}),
    ])
    events_insert(backend, [earn])

    rows = loyalty_report(backend=backend, scope=_scope(advertiser_ids=frozenset({"1"})))

    assert rows == [LoyaltyRow(bucket=DAY, key="1", earned=2, earned_points=150, redeemed=1,
                               redeemed_points=100, tier_changes=1)]


def test_dsp_summary_per_partner(backend: AnalyticsBackend) -> None:
    events_insert(backend, [
        make_event(EventType.DSP_SENT, TEN, partner="acme"),
        make_event(EventType.DSP_SENT, TEN, partner="acme"),
        make_event(EventType.DSP_SENT, TEN, partner="acme"),
        make_event(EventType.DSP_WON, TEN, partner="acme", price_micros=2_000_000),
        make_event(EventType.DSP_LOST, TEN, partner="acme"),
        make_event(EventType.DSP_TIMEOUT, TEN, partner="acme"),
        make_event(EventType.DSP_SENT, ELEVEN, partner="zeta"),
    ])

    rows = dsp_report(backend=backend, scope=_scope(grain=Grain.HOUR))

    assert rows == [DspRow(bucket=TEN, key="acme", sent=3, won=1, lost=1, timeouts=1),
                    DspRow(bucket=ELEVEN, key="zeta", sent=1)]
    assert rows[0].win_rate == 0.333333


def test_empty_tables_give_an_empty_report(backend: AnalyticsBackend) -> None:
    report = performance_report(backend=backend, scope=_scope(), currencies=CURRENCIES)

    assert report.rows == []
    assert report.total == PerformanceRow(bucket=None, key="")
    assert (report.total.ecpm, report.total.ctr, report.total.win_rate) == ({}, None, None)
    assert loyalty_report(backend=backend, scope=_scope()) == []
    assert dsp_report(backend=backend, scope=_scope()) == []


def test_a_scope_needs_an_aware_range_that_ends_after_it_starts() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ReportScope(start=datetime(2024, 5, 17), end=datetime(2024, 5, 18))
    with pytest.raises(ValueError, match="end after it starts"):
        ReportScope(start=DAY, end=DAY)
