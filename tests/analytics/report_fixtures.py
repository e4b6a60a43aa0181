"""Fixtures for the report tests: an analytics backend with the tables, on chDB and on the
real ClickHouse server, and functions that insert events and roll hours up as the platform does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from analytics.clickhouse import AnalyticsBackend, ChdbBackend, ClickHouseBackend
from analytics.events import COLUMNS, Event, EventType, to_row
from analytics.maintenance import rollup_hours
from analytics.migrate import migrations_apply


def analytics_tables_create(backend: AnalyticsBackend) -> None:
    migrations_apply(backend=backend, retention_days=36_500)


def open_backend(kind: str, tmp_path: Path, clickhouse_url: str | None) -> AnalyticsBackend:
    database = f"test_{uuid.uuid4().hex}"
    if kind == "chdb":
        return ChdbBackend(tmp_path / "chdb", database=database)
    assert clickhouse_url is not None
    return ClickHouseBackend(urlsplit(clickhouse_url)._replace(path=f"/{database}").geturl())


def close_backend(backend: AnalyticsBackend) -> None:
    if isinstance(backend, ClickHouseBackend):
        backend.execute(f"DROP DATABASE IF EXISTS {backend.database}")
    backend.close()


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnalyticsBackend]:
    """An empty database with the analytics tables, on chDB and on the ClickHouse server."""
    url = request.getfixturevalue("clickhouse_url") if request.param == "clickhouse" else None
    opened = open_backend(request.param, tmp_path, url)
    analytics_tables_create(opened)
    yield opened
    close_backend(opened)


def make_event(event_type: EventType, at: datetime, **fields: object) -> Event:
    return Event(event_type=event_type, timestamp=at, node="bidder-1",  # type: ignore[arg-type]
                 **fields)


def events_insert(backend: AnalyticsBackend, events: Iterable[Event]) -> None:
    backend.insert("analytics_events", COLUMNS, [to_row(event) for event in events])


def hours_roll_up(backend: AnalyticsBackend, hours: Iterable[datetime]) -> None:
    """Roll up exactly `hours` (consecutive, oldest first) with the maintenance task's code.
    The hour before the first is recorded as rolled up (with no rows: these tests have no
    events in it), so the task starts at the first instead of at the oldest event."""
    hours = list(hours)
    if not hours:
        return
    backend.insert("analytics_rollup_hours", ["hour", "computed_at"],
                   [(hours[0] - timedelta(hours=1), hours[0] - timedelta(hours=1))])
    rollup_hours(backend=backend, now=hours[-1] + timedelta(hours=1, minutes=1),
                 lookback_hours=len(hours), retention_days=36_500)
