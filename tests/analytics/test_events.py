"""The analytics event schema: defaults, batch encoding, evolution rules and row layout."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from analytics.events import (
    COLUMNS,
    SCHEMA_VERSION,
    Event,
    EventType,
    decode_batch,
    encode_batch,
    to_columns,
    to_row,
)


def test_event_types_are_the_documented_list() -> None:
    assert [member.value for member in EventType] == [
        "bid_request",
        "bid",
        "no_bid",
        "win",
        "billing",
        "loss",
        "impression",
        "click",
        "conversion",
        "loyalty_earn",
        "loyalty_redeem",
        "loyalty_tier_change",
        "dsp_sent",
        "dsp_won",
        "dsp_lost",
        "dsp_timeout",
        "ingest",
        "model_rollout",
        "vast_tracking",
    ]


def test_an_event_gets_a_fresh_id_an_aware_utc_timestamp_and_the_schema_version() -> None:
    before = datetime.now(UTC)
    first = Event(event_type=EventType.BID_REQUEST, node="bidder-1")
    second = Event(event_type=EventType.BID_REQUEST, node="bidder-1")

    assert first.event_id.version == 4
    assert first.event_id != second.event_id
    assert first.timestamp.tzinfo is UTC
    assert before <= first.timestamp <= datetime.now(UTC)
    assert first.schema_version == SCHEMA_VERSION == 1
    assert (first.campaign_id, first.price_micros, first.attributes) == ("", 0, {})


def test_events_are_frozen() -> None:
    event = Event(event_type=EventType.CLICK, node="web-1")

    with pytest.raises(AttributeError):
        event.node = "other"  # type: ignore[misc]


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Event(event_type=EventType.CLICK, node="web-1", timestamp=datetime(2024, 1, 1))


def test_a_batch_round_trips_through_encode_and_decode() -> None:
    events = [
        Event(
            event_type=EventType.WIN,
            node="bidder-2",
            request_id="req-1",
            price_micros=2_340_000,
            currency="USD",
            attributes={"seat": "s1"},
        ),
        Event(event_type=EventType.LOYALTY_EARN, node="web-1", user_id="u-1"),
    ]

    assert decode_batch(encode_batch(events)) == events


def test_decoding_ignores_unknown_fields_from_a_newer_schema() -> None:
    data = (
        b'[{"event_id":"61f0c404-5cb3-41e7-907b-a6006ad3dba0","event_type":"click",'
        b'"timestamp":"2024-05-17T12:30:45Z","node":"web-1","schema_version":2,'
        b'"campaign_id":"cmp-9","added_later":{"nested":[1,2]}}]'
    )

    assert decode_batch(data) == [
        Event(
            event_id=uuid.UUID("61f0c404-5cb3-41e7-907b-a6006ad3dba0"),
            event_type=EventType.CLICK,
            timestamp=datetime(2024, 5, 17, 12, 30, 45, tzinfo=UTC),
            node="web-1",
            schema_version=2,
            campaign_id="cmp-9",
        )
    ]


def test_decoding_an_unknown_event_type_raises_validation_error() -> None:
    data = b'[{"event_type":"teleport","node":"web-1"}]'

    with pytest.raises(msgspec.ValidationError, match="Invalid enum value 'teleport'"):
        decode_batch(data)


def test_decoding_a_naive_timestamp_raises_validation_error() -> None:
    data = b'[{"event_type":"click","node":"web-1","timestamp":"2024-05-17T12:30:45"}]'

    with pytest.raises(msgspec.ValidationError, match="timezone"):
        decode_batch(data)


def test_to_row_follows_columns_with_epoch_seconds_and_sorted_attributes() -> None:
    event = Event(
        event_id=uuid.UUID("61f0c404-5cb3-41e7-907b-a6006ad3dba0"),
        event_type=EventType.NO_BID,
        timestamp=datetime(2024, 5, 17, 14, 30, 45, tzinfo=timezone(timedelta(hours=2))),
        node="bidder-1",
        request_id="req",
        impression_id="imp",
        campaign_id="cmp",
        creative_id="crv",
        advertiser_id="adv",
        user_id="usr",
        offer_id="off",
        exchange="xch",
        partner="dsp",
        price_micros=5,
        currency="EUR",
        latency_us=120,
        reason="frequency_capped",
        attributes={"z": "last", "a": "first"},
    )

    row = to_row(event)

    assert len(row) == len(COLUMNS)
    assert dict(zip(COLUMNS, row, strict=True)) == {
        "event_id": uuid.UUID("61f0c404-5cb3-41e7-907b-a6006ad3dba0"),
        "event_type": "no_bid",
        "timestamp": int(datetime(2024, 5, 17, 12, 30, 45, tzinfo=UTC).timestamp()),
        "node": "bidder-1",
        "schema_version": 1,
        "request_id": "req",
        "impression_id": "imp",
        "campaign_id": "cmp",
        "creative_id": "crv",
        "advertiser_id": "adv",
        "user_id": "usr",
        "offer_id": "off",
        "exchange": "xch",
        "partner": "dsp",
        "price_micros": 5,
        "currency": "EUR",
        "latency_us": 120,
        "reason": "frequency_capped",
        "attribute_keys": ["a", "z"],
        "attribute_values": ["first", "last"],
    }


def test_to_columns_holds_the_rows_of_to_row_column_by_column() -> None:
    events = [Event(event_type=EventType.BID, node="n", attributes={"b": "2", "a": "1"}),
              Event(event_type=EventType.WIN, node="n", price_micros=7)]

    columns = to_columns(events)

    assert len(columns) == len(COLUMNS)
    assert [tuple(row) for row in zip(*columns, strict=True)] == [to_row(event)
                                                                  for event in events]
