"""The `AnalyticsBackend` contract, run against chDB and a real ClickHouse server."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from analytics.clickhouse import (
    AnalyticsBackend,
    AnalyticsQueryError,
    AnalyticsUnavailable,
    ChdbBackend,
    ClickHouseBackend,
    analytics_from_url,
)
from analytics.events import COLUMNS, Event, EventType, to_columns, to_row
from analytics.migrate import migrations_apply

EXPECTED_TYPES = [
    ("event_id", "UUID"),
    ("event_type", "String"),
    ("timestamp", "DateTime('UTC')"),
    ("node", "String"),
    ("schema_version", "UInt16"),
    ("request_id", "String"),
    ("impression_id", "String"),
    ("campaign_id", "String"),
    ("creative_id", "String"),
    ("advertiser_id", "String"),
    ("user_id", "String"),
    ("offer_id", "String"),
    ("exchange", "String"),
    ("partner", "String"),
    ("price_micros", "Int64"),
    ("currency", "String"),
    ("latency_us", "Int64"),
    ("reason", "String"),
    ("attribute_keys", "Array(String)"),
    ("attribute_values", "Array(String)"),
]


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnalyticsBackend]:
    database = f"test_{uuid.uuid4().hex}"
    if request.param == "chdb":
        embedded = ChdbBackend(tmp_path / "chdb", database=database)
        yield embedded
        embedded.close()
        return
    url = urlsplit(request.getfixturevalue("clickhouse_url"))._replace(path=f"/{database}")
    server = ClickHouseBackend(url.geturl())
    yield server
    server.execute(f"DROP DATABASE IF EXISTS {database}")
    server.close()


def create_events_table(backend: AnalyticsBackend) -> None:
    # A century of retention: the TTL counts from the real clock, and would delete these
    # 2024 events within seconds where the server has TTL.
    migrations_apply(backend=backend, retention_days=36_500)


def make_event(**fields: object) -> Event:
    defaults: dict[str, object] = {
        "event_type": EventType.BID,
        "node": "bidder-1",
        "timestamp": datetime(2024, 5, 17, 12, 30, 45, tzinfo=UTC),
        "campaign_id": "cmp-1",
    }
    return Event(**(defaults | fields))  # type: ignore[arg-type]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ping_and_server_version(backend: AnalyticsBackend) -> None:
    backend.ping()
    version = backend.server_version()

    assert all(isinstance(part, int) for part in version)
    assert len(version) >= 3
    assert version >= (18, 16)


def test_events_table_has_the_columns_of_the_event_schema(backend: AnalyticsBackend) -> None:
    create_events_table(backend)
    create_events_table(backend)

    described = [tuple(row[:2]) for row in backend.query("DESCRIBE TABLE analytics_events")]

    assert described == EXPECTED_TYPES
    assert tuple(name for name, _ in described) == COLUMNS


def _as_read(row: tuple) -> tuple:
    """A row as ClickHouse returns it: the epoch-seconds timestamp as an aware datetime."""
    return row[:2] + (datetime.fromtimestamp(row[2], UTC),) + row[3:]


def test_inserted_events_read_back_as_the_same_rows(backend: AnalyticsBackend) -> None:
    create_events_table(backend)
    win = make_event(
        event_type=EventType.WIN,
        timestamp=datetime(2024, 5, 17, 14, 30, 45, tzinfo=timezone(timedelta(hours=2))),
        price_micros=1_250_000,
        currency="EUR",
        latency_us=840,
        attributes={"deal": "d-1", "seat": "it's \\ quoted\n"},
    )
    bid = make_event(reason="", user_id="user-7", exchange="xch")

    inserted = backend.insert("analytics_events", COLUMNS, [to_row(win), to_row(bid)])

    rows = backend.query(f"SELECT {', '.join(COLUMNS)} FROM analytics_events ORDER BY event_type")
    assert inserted == 2
    assert rows == [_as_read(to_row(bid)), _as_read(to_row(win))]
    assert rows[1][2] == datetime(2024, 5, 17, 12, 30, 45, tzinfo=UTC)


def test_events_inserted_by_columns_read_back_as_their_rows(backend: AnalyticsBackend) -> None:
    create_events_table(backend)
    events = [make_event(attributes={"media": "video", "deal": "d-9"}),
              make_event(event_type=EventType.CLICK, user_id="user-3")]

    inserted = backend.insert_columns("analytics_events", COLUMNS, to_columns(events))

    rows = backend.query(f"SELECT {', '.join(COLUMNS)} FROM analytics_events ORDER BY event_type")
    assert inserted == 2
    assert rows == [_as_read(to_row(events[0])), _as_read(to_row(events[1]))]


def test_a_replayed_event_counts_once_with_final(backend: AnalyticsBackend) -> None:
    create_events_table(backend)
    replayed = make_event()
    other = make_event(event_type=EventType.NO_BID, reason="no_candidates")

    backend.insert("analytics_events", COLUMNS, [to_row(replayed), to_row(other)])
    backend.insert("analytics_events", COLUMNS, [to_row(replayed)])

    assert backend.query("SELECT count() FROM analytics_events FINAL") == [(2,)]
    assert backend.query(
        "SELECT event_type, count() FROM analytics_events FINAL GROUP BY event_type "
        "ORDER BY event_type"
    ) == [("bid", 1), ("no_bid", 1)]


def test_parameters_are_escaped_the_same_way(backend: AnalyticsBackend) -> None:
    rows = backend.query(
        "SELECT %(text)s, %(number)s, %(items)s, toDateTime(%(when)s, 'UTC'), %(missing)s, "
        "toUUID(%(event_id)s), 'literal %%'",
        {
            "text": "it's a \\ test\n\ttab",
            "number": -42,
            "items": ["a", "b'c"],
            "when": datetime(2024, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "missing": None,
            "event_id": uuid.UUID("61f0c404-5cb3-11e7-907b-a6006ad3dba0"),
        },
    )

    assert rows == [
        (
            "it's a \\ test\n\ttab",
            -42,
            ["a", "b'c"],
            datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            None,
            uuid.UUID("61f0c404-5cb3-11e7-907b-a6006ad3dba0"),
            "literal %",
        )
    ]


def test_query_returns_python_types_like_clickhouse_driver(backend: AnalyticsBackend) -> None:
    rows = backend.query(
        "SELECT toNullable(toInt64(3)), CAST(NULL AS Nullable(String)), [toInt32(1), 2], "
        "toDate('2024-02-29'), toDecimal64(1.25, 2), toFloat64(0.5), "
        "toUInt64(18446744073709551615), "
        "toDateTime('2024-02-29 10:00:00', 'UTC')"
    )

    assert rows == [
        (
            3,
            None,
            [1, 2],
            date(2024, 2, 29),
            Decimal("1.25"),
            0.5,
            18446744073709551615,
            datetime(2024, 2, 29, 10, tzinfo=UTC),
        )
    ]


def test_query_without_rows_returns_an_empty_list(backend: AnalyticsBackend) -> None:
    create_events_table(backend)

    assert backend.query("SELECT event_id FROM analytics_events") == []


def test_insert_of_no_rows_returns_zero(backend: AnalyticsBackend) -> None:
    create_events_table(backend)

    assert backend.insert("analytics_events", COLUMNS, []) == 0
    assert backend.query("SELECT count() FROM analytics_events") == [(0,)]


def test_rejected_insert_raises_and_writes_nothing(backend: AnalyticsBackend) -> None:
    create_events_table(backend)
    good = to_row(make_event())
    bad = to_row(make_event(price_micros="not a number"))  # type: ignore[arg-type]

    with pytest.raises(AnalyticsQueryError):
        backend.insert("analytics_events", COLUMNS, [good, bad])

    assert backend.query("SELECT count() FROM analytics_events") == [(0,)]


def test_invalid_sql_raises_analytics_query_error(backend: AnalyticsBackend) -> None:
    with pytest.raises(AnalyticsQueryError, match="no_such_table"):
        backend.query("SELECT * FROM no_such_table")


def test_insert_rejects_unsafe_identifiers(backend: AnalyticsBackend) -> None:
    with pytest.raises(ValueError, match="invalid table name 'events; DROP'"):
        backend.insert("events; DROP", ["a"], [(1,)])
    with pytest.raises(ValueError, match="invalid column name 'a b'"):
        backend.insert("events", ["a b"], [(1,)])


def test_unreachable_clickhouse_raises_analytics_unavailable() -> None:
    server = ClickHouseBackend(
        f"clickhouse://default@127.0.0.1:{unused_port()}/nowhere", connect_timeout=1
    )

    with pytest.raises(AnalyticsUnavailable):
        server.ping()
    server.close()


def test_analytics_from_url_chooses_the_implementation(tmp_path: Path) -> None:
    embedded = analytics_from_url("", chdb_path=tmp_path)
    server = analytics_from_url("clickhouse://default@127.0.0.1:9000/reports", chdb_path=tmp_path)

    assert type(embedded) is ChdbBackend
    assert type(server) is ClickHouseBackend
    assert server.database == "reports"
    with pytest.raises(ValueError) as raised:
        analytics_from_url("http://127.0.0.1:8123", chdb_path=tmp_path)
    assert str(raised.value) == (
        "unsupported analytics URL scheme 'http': use clickhouse:// or clickhouses://"
    )
