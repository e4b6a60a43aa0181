"""Purchases from point-of-sale systems, apps, kiosks and web shops, over NATS, into points.

Sources publish omnichannel events on ``ingest.<source>.<event>`` (``ingest.pos.purchase``,
``ingest.mobile.purchase``, ...). The JetStream stream `INGEST` keeps them, so a consumer that
is down loses nothing; this consumer reads it through its durable consumer `loyalty-ingest`
and awards each purchase through `points_earn`, the same service as `POST /v1/loyalty/earn`.
Events other than purchases are acknowledged and left to other consumers of the stream.

A message is acknowledged only after its points committed. A redelivered message (the
consumer died before its ack) carries the same transaction id and changes nothing the second
time. A message that can never succeed (not JSON, no member, no amount, an unknown program or
currency) is counted, logged and parked on ``dead-letter.ingest.<source>.<event>`` (stream
`INGEST_DEAD_LETTER`, kept for inspection and replay), then acknowledged: it never stops the
consumer. When the database is away, messages are nak'ed and come back.

A purchase event (the original design's ingest event, purchase details in ``payload``)::

    {"event_id": "e-1", "user_id": "u-42", "device_id": "", "occurred_at": "...",
     "payload": {"program": 3, "transaction_id": "T-1001", "amount": "12.50",
                 "currency": "USD", "channel": "in_store", "referral": false,
                 "digital": false}}

``payload.advertiser`` may name the program by its advertiser instead; the member is
``user_id``, else ``device_id``; the transaction id is ``payload.transaction_id``, else
``event_id``; the channel is ``payload.channel``, else the source.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from asgiref.sync import sync_to_async
from django.db import DatabaseError, close_old_connections

from campaign_express.backends.bus import Bus, BusUnavailable, StreamMessage
from campaign_express.errors import DomainError
from loyalty import metrics
from loyalty.models import Program
from loyalty.services import EarnResult, points_earn

logger = logging.getLogger(__name__)

STREAM = "INGEST"
SUBJECTS = ("ingest.>",)
CONSUMER = "loyalty-ingest"
DEAD_LETTER_STREAM = "INGEST_DEAD_LETTER"
DEAD_LETTER_PREFIX = "dead-letter.ingest"
PURCHASE = "purchase"
FETCH_MESSAGES = 100


class MalformedPurchase(ValueError):
    """A purchase message that no retry can award."""


class IngestEvent(msgspec.Struct, kw_only=True):
    event_id: str = ""
    user_id: str | None = None
    device_id: str | None = None
    payload: dict[str, Any] = {}


@dataclass(frozen=True)
class Purchase:
    program_id: int | None
    advertiser_id: int | None
    member: str
    transaction_id: str
    amount: Decimal
    currency: str
    channel: str
    is_referral: bool
    is_digital: bool


def _integer(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise MalformedPurchase(f"payload.{name} must be an integer id")
    try:
        return int(value)
    except ValueError:
        raise MalformedPurchase(f"payload.{name} must be an integer id") from None


def purchase_parse(data: bytes, *, source: str) -> Purchase:
    """The purchase in an ingest message; raises MalformedPurchase."""
    try:
        event = msgspec.json.decode(data, type=IngestEvent)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise MalformedPurchase(f"not an ingest event: {error}") from error
    payload = event.payload
    member = (event.user_id or event.device_id or "").strip()
    if not member:
        raise MalformedPurchase("no user_id or device_id")
    transaction_id = str(payload.get("transaction_id") or event.event_id or "").strip()
    if not transaction_id:
        raise MalformedPurchase("no payload.transaction_id or event_id")
    raw_amount = payload.get("amount")
    if isinstance(raw_amount, bool) or not isinstance(raw_amount, int | float | str):
        raise MalformedPurchase("payload.amount must be a decimal number")
    try:
        amount = Decimal(str(raw_amount))
    except InvalidOperation:
        raise MalformedPurchase(f"payload.amount {raw_amount!r} is not a number") from None
    if not amount.is_finite():
        raise MalformedPurchase(f"payload.amount {raw_amount!r} is not a number")
    program_id = _integer(payload.get("program"), "program")
    advertiser_id = _integer(payload.get("advertiser"), "advertiser")
    if program_id is None and advertiser_id is None:
        raise MalformedPurchase("no payload.program or payload.advertiser")
    return Purchase(program_id=program_id, advertiser_id=advertiser_id, member=member,
                    transaction_id=transaction_id, amount=amount,
                    currency=str(payload.get("currency") or ""),
                    channel=str(payload.get("channel") or source),
                    is_referral=payload.get("referral") is True,
                    is_digital=payload.get("digital") is True)


def purchase_award(purchase: Purchase) -> EarnResult:
    """Award a purchase through the earn service; MalformedPurchase when no retry can."""
    programs = Program.objects.select_related("advertiser")
    program = (programs.filter(pk=purchase.program_id).first() if purchase.program_id
               is not None else programs.filter(advertiser_id=purchase.advertiser_id).first())
    if program is None:
        raise MalformedPurchase("no such loyalty program")
    try:
        return points_earn(program=program, user_id=purchase.member, amount=purchase.amount,
                           currency=purchase.currency, channel=purchase.channel[:50],
                           transaction_id=purchase.transaction_id,
                           is_referral=purchase.is_referral, is_digital=purchase.is_digital)
    except DomainError as error:
        raise MalformedPurchase(f"refused: {error.message}") from error


def _award_sync(data: bytes, source: str) -> EarnResult:
    try:
        return purchase_award(purchase_parse(data, source=source))
    finally:
        close_old_connections()


class IngestConsumer:
    def __init__(self, *, bus: Bus, stream: str = STREAM, subjects: tuple[str, ...] = SUBJECTS,
                 consumer: str = CONSUMER, dead_letter_stream: str = DEAD_LETTER_STREAM,
                 dead_letter_prefix: str = DEAD_LETTER_PREFIX, ack_wait: float = 30.0,
                 max_backoff: float = 10.0) -> None:
        self.bus = bus
        self.stream = stream
        self.subjects = subjects
        self.consumer = consumer
        self.dead_letter_stream = dead_letter_stream
        self.dead_letter_prefix = dead_letter_prefix
        self.ack_wait = ack_wait
        self.max_backoff = max_backoff
        self._is_ready = False
        self._award = sync_to_async(_award_sync)

    async def streams_ensure(self) -> None:
        if not self._is_ready:
            await self.bus.stream_ensure(self.stream, self.subjects)
            await self.bus.stream_ensure(self.dead_letter_stream,
                                         (f"{self.dead_letter_prefix}.>",))
            self._is_ready = True

    async def _park(self, message: StreamMessage, reason: str) -> None:
        tail = ".".join(message.subject.split(".")[-2:])
        logger.error("loyalty ingest: parked message %d (%s): %s", message.sequence,
                     message.subject, reason)
        await self.bus.stream_publish(
            f"{self.dead_letter_prefix}.{tail}", message.data,
            msg_id=f"{self.stream}-{message.sequence}",
            headers={"Ingest-Error": reason[:500], "Ingest-Subject": message.subject,
                     "Ingest-Sequence": str(message.sequence)})
        await message.ack()
        metrics.INGEST_MESSAGES.labels(outcome="parked").inc()

    async def handle(self, message: StreamMessage) -> str:
        """Award, ignore or park one message; its outcome. Raises DatabaseError (after a nak)
        when the database is away."""
        tokens = message.subject.split(".")
        if len(tokens) < 3 or tokens[-1] != PURCHASE:
            await message.ack()
            metrics.INGEST_MESSAGES.labels(outcome="ignored").inc()
            return "ignored"
        try:
            await self._award(message.data, tokens[-2])
        except MalformedPurchase as error:
            await self._park(message, str(error))
            return "parked"
        except DatabaseError:
            with contextlib.suppress(BusUnavailable):
                await message.nak()
            raise
        await message.ack()
        metrics.INGEST_MESSAGES.labels(outcome="awarded").inc()
        return "awarded"

    async def consume_once(self, *, timeout: float = 1.0) -> dict[str, int]:
        """One fetch, each message handled in order; outcomes counted."""
        await self.streams_ensure()
        outcomes: dict[str, int] = {}
        messages = await self.bus.stream_fetch(self.stream, self.consumer, batch=FETCH_MESSAGES,
                                               timeout=timeout, ack_wait=self.ack_wait)
        for index, message in enumerate(messages):
            try:
                outcome = await self.handle(message)
            except DatabaseError:
                for rest in messages[index + 1:]:
                    with contextlib.suppress(BusUnavailable):
                        await rest.nak()
                raise
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        return outcomes

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume until `stop` is set, backing off while the bus or the database is away."""
        stop = stop or asyncio.Event()
        backoff = 0.5
        while not stop.is_set():
            try:
                await self.consume_once()
                backoff = 0.5
            except (BusUnavailable, DatabaseError) as error:
                logger.warning("loyalty ingest: %s; retrying in %.1f s", error, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self.max_backoff)
