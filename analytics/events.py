"""The analytics event schema: what every part of the platform emits and ClickHouse stores.

One flat, versioned struct for all event types keeps the pipeline simple: producers batch
events into one message, the sink inserts a batch as one INSERT into `analytics_events`, and
reports filter by `event_type`. Type-specific extras go into `attributes`.

Evolution rules, so producers and the sink can be deployed in any order:

- Adding a field with a default is compatible: an older sink ignores fields it does not know,
  a newer sink fills the default for events from older producers. Bump `SCHEMA_VERSION`.
- A new `EventType` member must reach the sink before any producer emits it: decoding a batch
  with an unknown type raises `msgspec.ValidationError` (the sink dead-letters that batch
  instead of storing a type no report knows).
- Never rename or retype a field; add a new one.

Django-free: the bidder emits events on the bid path.
"""

from __future__ import annotations

import enum
import random
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

SCHEMA_VERSION = 1


class EventType(enum.StrEnum):
    BID_REQUEST = "bid_request"
    BID = "bid"
    NO_BID = "no_bid"
    WIN = "win"
    BILLING = "billing"
    LOSS = "loss"
    IMPRESSION = "impression"
    CLICK = "click"
    CONVERSION = "conversion"
    LOYALTY_EARN = "loyalty_earn"
    LOYALTY_REDEEM = "loyalty_redeem"
    LOYALTY_TIER_CHANGE = "loyalty_tier_change"
    DSP_SENT = "dsp_sent"
    DSP_WON = "dsp_won"
    DSP_LOST = "dsp_lost"
    DSP_TIMEOUT = "dsp_timeout"
    INGEST = "ingest"
    MODEL_ROLLOUT = "model_rollout"
    VAST_TRACKING = "vast_tracking"


def _now() -> datetime:
    return datetime.now(UTC)


def _event_id() -> uuid.UUID:
    """A random version-4 UUID from the process's PRNG (reseeded after fork).

    Ids must be unique, not secret; `uuid.uuid4` reads os.urandom, a system call per event
    on the bid path.
    """
    bits = random.getrandbits(128)
    bits = (bits & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
    bits = (bits & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
    return uuid.UUID(int=bits)


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One analytics event.

    `event_id` is the deduplication key: a replayed batch carries the same ids and collapses
    in ClickHouse, so a producer retrying a batch must reuse its events, never rebuild them.
    `timestamp` is aware UTC (ClickHouse keeps whole seconds). Prices are integer micros of
    `currency` (ISO 4217), never floats. `user_id` is set only when the user consented to
    tracking (GDPR/TCF consent, no COPPA, no opt-out); otherwise it stays empty.
    """

    event_id: uuid.UUID = msgspec.field(default_factory=_event_id)
    event_type: EventType
    timestamp: Annotated[datetime, msgspec.Meta(tz=True)] = msgspec.field(default_factory=_now)
    node: str
    schema_version: int = SCHEMA_VERSION
    request_id: str = ""
    impression_id: str = ""
    campaign_id: str = ""
    creative_id: str = ""
    advertiser_id: str = ""
    user_id: str = ""
    offer_id: str = ""
    exchange: str = ""
    partner: str = ""
    price_micros: int = 0
    currency: str = ""
    latency_us: int = 0
    reason: str = ""
    attributes: dict[str, str] = {}

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError("Event.timestamp must be timezone-aware")


# Column order of `analytics_events` (analytics/clickhouse_migrations/0001_analytics_events.sql)
# and of `to_row`.
COLUMNS: tuple[str, ...] = (
    "event_id",
    "event_type",
    "timestamp",
    "node",
    "schema_version",
    "request_id",
    "impression_id",
    "campaign_id",
    "creative_id",
    "advertiser_id",
    "user_id",
    "offer_id",
    "exchange",
    "partner",
    "price_micros",
    "currency",
    "latency_us",
    "reason",
    "attribute_keys",
    "attribute_values",
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(list[Event])


def encode_batch(events: Iterable[Event]) -> bytes:
    """One JSON array: the payload of one `analytics.events` message."""
    return _encoder.encode(list(events))


def decode_batch(data: bytes) -> list[Event]:
    """Unknown fields are ignored; malformed data raises msgspec.DecodeError/ValidationError."""
    return _decoder.decode(data)


def to_row(event: Event) -> tuple[Any, ...]:
    """The event as a row in `COLUMNS` order: `to_columns` of it alone, so the two can never
    differ (timestamp as epoch seconds, attributes as two arrays sorted by key)."""
    return tuple(column[0] for column in to_columns([event]))


def to_columns(events: Sequence[Event]) -> list[list[Any]]:
    """The events as columns in `COLUMNS` order, the shape a native INSERT sends: the sink
    writes batches this way, without building a row per event first."""
    attribute_keys = [sorted(event.attributes) for event in events]
    return [
        [event.event_id for event in events],
        [str(event.event_type) for event in events],
        [int(event.timestamp.timestamp()) for event in events],
        [event.node for event in events],
        [event.schema_version for event in events],
        [event.request_id for event in events],
        [event.impression_id for event in events],
        [event.campaign_id for event in events],
        [event.creative_id for event in events],
        [event.advertiser_id for event in events],
        [event.user_id for event in events],
        [event.offer_id for event in events],
        [event.exchange for event in events],
        [event.partner for event in events],
        [event.price_micros for event in events],
        [event.currency for event in events],
        [event.latency_us for event in events],
        [event.reason for event in events],
        attribute_keys,
        [[event.attributes[key] for key in keys]
         for event, keys in zip(events, attribute_keys, strict=True)],
    ]
