"""Hourly rollups, retention by partition and the TTL, on chDB and on the ClickHouse 18.16
server, each test on a freshly migrated database of its own and with its own clock."""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from analytics import tasks
from analytics.clickhouse import AnalyticsBackend, ChdbBackend, ClickHouseBackend
from analytics.events import COLUMNS, Event, EventType, to_row
from analytics.maintenance import (
    events_ttl_sync,
    hour_floor,
    partitions_drop_expired,
    rolled_up_until,
    rollup_hours,
    ttl_supported,
)
from analytics.migrate import migrations_apply
from campaign_express import platform

# The TTL counts from the real clock and would delete these fixed past dates within seconds
# where the server has TTL; a century of TTL leaves the tested task the only thing deleting.
CENTURY = 36_500


def at(day: int, hour: int, minute: int = 0, month: int = 5) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnalyticsBackend]:
    database = f"test_{uuid.uuid4().hex}"
    opened: AnalyticsBackend
    if request.param == "chdb":
        opened = ChdbBackend(tmp_path / "chdb", database=database)
    else:
        url = urlsplit(request.getfixturevalue("clickhouse_url"))._replace(path=f"/{database}")
        opened = ClickHouseBackend(url.geturl())
    migrations_apply(backend=opened, retention_days=CENTURY)
    yield opened
    if request.param == "clickhouse":
        opened.execute(f"DROP DATABASE IF EXISTS {database}")
    opened.close()


def event(when: datetime, event_type: EventType = EventType.WIN, **fields: object) -> Event:
    defaults: dict[str, object] = {"advertiser_id": "adv-1", "campaign_id": "cmp-1",
                                   "creative_id": "cr-1", "exchange": "xch"}
    return Event(event_type=event_type, timestamp=when, node="bidder-1",  # type: ignore[arg-type]
                 **(defaults | fields))


def insert(backend: AnalyticsBackend, *events: Event) -> None:
    backend.insert("analytics_events", COLUMNS, [to_row(item) for item in events])


def hourly(backend: AnalyticsBackend) -> list[tuple[object, ...]]:
    return backend.query(
        "SELECT hour, campaign_id, creative_id, exchange, event_type, reason, events, "
        "price_micros, latency_us, computed_at FROM analytics_hourly FINAL "
        "ORDER BY hour, campaign_id, event_type, reason")


def recorded_hours(backend: AnalyticsBackend) -> list[datetime]:
    return [hour for (hour,) in backend.query(
        "SELECT hour FROM analytics_rollup_hours FINAL ORDER BY hour")]


def partitions(backend: AnalyticsBackend) -> list[str]:
    return [partition for (partition,) in backend.query(
        "SELECT DISTINCT partition FROM system.parts WHERE database = %(database)s "
        "AND table = 'analytics_events' AND active ORDER BY partition",
        {"database": backend.database})]


def test_rollups_count_a_replayed_batch_once_and_leave_the_open_hour(
        backend: AnalyticsBackend) -> None:
    batch = [
        event(at(17, 10, 5), price_micros=1_500_000, latency_us=800),
        event(at(17, 10, 50), price_micros=2_000_000, latency_us=700),
        event(at(17, 10, 59), EventType.NO_BID, advertiser_id="", campaign_id="",
              creative_id="", reason="no_candidates", latency_us=300),
        event(at(17, 12, 30), campaign_id="cmp-2", price_micros=900_000, latency_us=1_000),
        event(at(17, 13, 1), price_micros=5_000_000),
    ]
    insert(backend, *batch)
    insert(backend, *batch[:2])
    now = at(17, 13, 5)

    hours = rollup_hours(backend=backend, now=now)

    assert hours == [at(17, 10), at(17, 11), at(17, 12)]
    assert hourly(backend) == [
        (at(17, 10), "", "", "xch", "no_bid", "no_candidates", 1, 0, 300, now),
        (at(17, 10), "cmp-1", "cr-1", "xch", "win", "", 2, 3_500_000, 1_500, now),
        (at(17, 12), "cmp-2", "cr-1", "xch", "win", "", 1, 900_000, 1_000, now),
    ]
    assert recorded_hours(backend) == hours
    assert rolled_up_until(backend=backend) == at(17, 13)


def test_late_events_are_counted_within_the_lookback_only(backend: AnalyticsBackend) -> None:
    insert(backend, event(at(17, 11, 10), price_micros=100), event(at(17, 12, 10),
                                                                  price_micros=200))
    first = at(17, 13, 5)
    rollup_hours(backend=backend, now=first)
    insert(backend, event(at(17, 11, 40), price_micros=10), event(at(17, 12, 40),
                                                                 price_micros=20))
    second = at(17, 15, 5)

    hours = rollup_hours(backend=backend, now=second, lookback_hours=3)

    assert hours == [at(17, 12), at(17, 13), at(17, 14)]
    assert hourly(backend) == [
        (at(17, 11), "cmp-1", "cr-1", "xch", "win", "", 1, 100, 0, first),
        (at(17, 12), "cmp-1", "cr-1", "xch", "win", "", 2, 220, 0, second),
    ]
    assert recorded_hours(backend) == [at(17, hour) for hour in range(10, 15)]
    assert rolled_up_until(backend=backend) == at(17, 15)


def test_a_run_after_a_gap_catches_up_every_missed_hour(backend: AnalyticsBackend) -> None:
    rollup_hours(backend=backend, now=at(17, 13, 5))
    insert(backend, event(at(17, 23, 30)), event(at(18, 0, 10)), event(at(18, 19, 59)))

    hours = rollup_hours(backend=backend, now=at(18, 20, 5), lookback_hours=1)

    assert hours == [at(17, 13) + timedelta(hours=n) for n in range(31)]
    assert [(row[0], row[6]) for row in hourly(backend)] == [
        (at(17, 23), 1), (at(18, 0), 1), (at(18, 19), 1)]
    assert rolled_up_until(backend=backend) == at(18, 20)


def test_the_first_run_starts_at_the_oldest_event_hour(backend: AnalyticsBackend) -> None:
    insert(backend, event(at(17, 6, 59)), event(at(17, 9, 0)))

    hours = rollup_hours(backend=backend, now=at(17, 13, 5))

    assert hours == [at(17, hour) for hour in range(6, 13)]


def test_the_first_run_skips_events_older_than_the_retention(
        backend: AnalyticsBackend) -> None:
    insert(backend, event(at(12, 9, 0)), event(at(15, 14, 30)))

    hours = rollup_hours(backend=backend, now=at(17, 13, 5), retention_days=2)

    assert (hours[0], hours[-1], len(hours)) == (at(15, 14), at(17, 12), 47)
    assert [(row[0], row[6]) for row in hourly(backend)] == [(at(15, 14), 1)]


def test_a_catch_up_goes_back_no_further_than_the_retention(
        backend: AnalyticsBackend) -> None:
    rollup_hours(backend=backend, now=at(1, 13, 5), lookback_hours=1)
    insert(backend, event(at(12, 9, 0)), event(at(15, 13, 30)))

    hours = rollup_hours(backend=backend, now=at(17, 13, 5), retention_days=2)

    assert (hours[0], hours[-1], len(hours)) == (at(15, 13), at(17, 12), 48)
    assert [(row[0], row[6]) for row in hourly(backend)] == [(at(15, 13), 1)]


def test_without_events_or_history_only_the_lookback_is_recorded(
        backend: AnalyticsBackend) -> None:
    assert rolled_up_until(backend=backend) is None

    hours = rollup_hours(backend=backend, now=at(17, 13, 0), lookback_hours=2)

    assert hours == [at(17, 11), at(17, 12)]
    assert hourly(backend) == []
    assert rolled_up_until(backend=backend) == at(17, 13)


def test_rollups_need_an_aware_clock(backend: AnalyticsBackend) -> None:
    with pytest.raises(ValueError, match="an aware datetime is required"):
        rollup_hours(backend=backend, now=datetime(2024, 5, 17, 13))
    assert hour_floor(at(17, 13, 59)) == at(17, 13)


def test_retention_drops_each_month_once_it_is_wholly_past(backend: AnalyticsBackend) -> None:
    insert(backend, *(event(datetime(year, month, 15, 12, tzinfo=UTC))
                      for year, month in [(2023, 12), (2024, 1), (2024, 2), (2024, 3),
                                          (2024, 4), (2024, 5)]))
    insert(backend, event(datetime(2024, 3, 31, 23, 59, 59, tzinfo=UTC)))
    # Sixty days after 2024-04-01 00:00, when March's last second leaves the retention.
    march_expires = datetime(2024, 5, 31, tzinfo=UTC)

    before = partitions_drop_expired(backend=backend, now=march_expires - timedelta(seconds=1),
                                     retention_days=60)
    assert before == ["202312", "202401", "202402"]
    assert partitions(backend) == ["202403", "202404", "202405"]

    assert partitions_drop_expired(backend=backend, now=march_expires,
                                   retention_days=60) == ["202403"]
    assert partitions_drop_expired(backend=backend, now=march_expires,
                                   retention_days=60) == []
    assert partitions(backend) == ["202404", "202405"]
    assert backend.query("SELECT toYYYYMM(timestamp), count() FROM analytics_events "
                         "GROUP BY toYYYYMM(timestamp) ORDER BY 1") == [(202404, 1), (202405, 1)]


def test_retention_leaves_the_rollups(backend: AnalyticsBackend) -> None:
    insert(backend, event(at(15, 12, 0, month=1)))
    rollup_hours(backend=backend, now=at(15, 13, 0, month=1))

    dropped = partitions_drop_expired(backend=backend, now=at(17, 13), retention_days=90)

    assert dropped == ["202401"]
    assert [(row[0], row[6]) for row in hourly(backend)] == [(at(15, 12, month=1), 1)]


def test_the_ttl_follows_the_retention_where_the_server_has_one(
        backend: AnalyticsBackend) -> None:
    has_ttl = ttl_supported(backend.server_version())

    assert events_ttl_sync(backend=backend, retention_days=30) is has_ttl
    assert events_ttl_sync(backend=backend, retention_days=30) is False

    table = str(backend.query("SELECT engine_full FROM system.tables WHERE database = "
                              "%(database)s AND name = 'analytics_events'",
                              {"database": backend.database})[0][0])
    assert ("TTL timestamp + toIntervalDay(30)" in table) is has_ttl
    assert ("TTL" in table) is has_ttl


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def platform_backend(request: pytest.FixtureRequest, settings,
                     tmp_path: Path) -> Iterator[AnalyticsBackend]:
    """The platform's analytics client on a fresh chDB path or server database, migrated."""
    database = f"test_{uuid.uuid4().hex}"
    if request.param == "chdb":
        settings.CLICKHOUSE_URL = ""
        settings.CHDB_PATH = tmp_path / "chdb"
    else:
        settings.CLICKHOUSE_URL = urlsplit(request.getfixturevalue("clickhouse_url"))._replace(
            path=f"/{database}").geturl()
    platform.analytics_close()
    migrations_apply(backend=platform.analytics(), retention_days=CENTURY)
    yield platform.analytics()
    if request.param == "clickhouse":
        platform.analytics().execute(f"DROP DATABASE IF EXISTS {database}")
    platform.analytics_close()


def test_the_rollup_task_uses_the_platform_backend_and_the_lookback_setting(
        platform_backend: AnalyticsBackend, settings) -> None:
    settings.CONFIG = type(settings.CONFIG)(**{**vars(settings.CONFIG),
                                               "analytics_rollup_lookback_hours": 2})
    before = hour_floor(datetime.now(UTC))

    hours = tasks.rollups_compute()

    after = hour_floor(datetime.now(UTC))
    end = datetime.fromisoformat(hours[-1]) + timedelta(hours=1)
    assert len(hours) == 2
    assert end in (before, after)
    assert rolled_up_until(backend=platform_backend) == end


def test_the_retention_task_applies_the_retention_setting(
        platform_backend: AnalyticsBackend, settings) -> None:
    settings.CONFIG = type(settings.CONFIG)(**{**vars(settings.CONFIG),
                                               "analytics_retention_days": 45})
    old = datetime.now(UTC) - timedelta(days=100)
    insert(platform_backend, event(old), event(datetime.now(UTC)))
    has_ttl = ttl_supported(platform_backend.server_version())

    dropped = tasks.retention_enforce()

    # Where the TTL is set to 45 days, the server may empty the old month before the task
    # drops it; either way the month is gone.
    assert partitions(platform_backend) == [f"{datetime.now(UTC):%Y%m}"]
    if not has_ttl:
        assert dropped == [f"{old:%Y%m}"]
    table = str(platform_backend.query(
        "SELECT engine_full FROM system.tables WHERE name = 'analytics_events' "
        "AND database = %(database)s", {"database": platform_backend.database})[0][0])
    assert ("TTL timestamp + toIntervalDay(45)" in table) is has_ttl


def test_tasks_log_and_return_nothing_while_clickhouse_is_down(
        settings, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.CLICKHOUSE_URL = f"clickhouse://default@127.0.0.1:{port}/nowhere"
    platform.analytics_close()
    try:
        with caplog.at_level(logging.WARNING, logger="analytics.tasks"):
            assert tasks.rollups_compute() == []
            assert tasks.retention_enforce() == []
    finally:
        platform.analytics_close()

    assert [record.getMessage().split(":")[0] for record in caplog.records
            if record.name == "analytics.tasks"] == [
        "hourly rollups not computed, ClickHouse is unavailable",
        "analytics retention not enforced, ClickHouse is unavailable",
    ]
