"""Purchases over NATS JetStream (a private nats-server) award points through the earn service:
once per transaction id, whatever is redelivered or sent again; a malformed message is parked
on the dead-letter subject and the consumer carries on."""

import asyncio
import json
import time
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from campaign_express.backends.nats_bus import NatsBus
from loyalty import services
from loyalty.ingest import DEAD_LETTER_STREAM, IngestConsumer
from loyalty.models import LedgerEntry, Member
from tests.campaign_express.platform import PrivateNats

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.nats]


@pytest.fixture
async def bus(tmp_path):
    nats = PrivateNats(tmp_path / "nats")
    nats.start()
    bus = NatsBus(f"nats://127.0.0.1:{nats.port}")
    await bus.connect()
    yield bus
    await bus.close()
    nats.stop()


@pytest.fixture
async def consumer(bus):
    consumer = IngestConsumer(bus=bus)
    await consumer.streams_ensure()
    return consumer


def purchase(program, *, member="u-1", transaction_id="T-1", amount="10.00", **payload):
    return json.dumps({"event_id": f"e-{transaction_id}", "user_id": member,
                       "occurred_at": "2026-05-01T10:00:00Z",
                       "payload": {"program": program.pk, "transaction_id": transaction_id,
                                   "amount": amount, "currency": "USD", **payload}}).encode()


async def send(bus, subject, data, msg_id):
    await bus.stream_publish(subject, data, msg_id=msg_id)


async def consume(consumer, messages: int) -> dict[str, int]:
    """Outcomes of the next ``messages`` messages."""
    totals: dict[str, int] = {}
    deadline = time.monotonic() + 10
    while sum(totals.values()) < messages:
        assert time.monotonic() < deadline, totals
        for outcome, count in (await consumer.consume_once(timeout=0.5)).items():
            totals[outcome] = totals.get(outcome, 0) + count
    return totals


@sync_to_async
def ledger():
    return list(LedgerEntry.objects.order_by("id").values_list(
        "member__user_id", "kind", "transaction_id", "points", "balance_after", "channel"))


async def test_a_pos_purchase_earns_points_once_per_transaction_id(bus, consumer, program):
    await send(bus, "ingest.pos.purchase", purchase(program), "m-1")
    await send(bus, "ingest.pos.purchase", purchase(program, amount="99.00"), "m-2")  # again
    await send(bus, "ingest.mobile.purchase",
               purchase(program, transaction_id="T-2", amount="10.00", channel="app",
                        referral=True), "m-3")

    assert await consume(consumer, 3) == {"awarded": 3}
    assert await ledger() == [("u-1", "earn", "T-1", 10, 10, "pos"),
                              ("u-1", "earn", "T-2", 20, 30, "app")]


async def test_rest_and_nats_share_one_idempotency(bus, consumer, program):
    await sync_to_async(services.points_earn)(program=program, user_id="u-1",
                                              amount=Decimal("10.00"), transaction_id="T-1")
    await send(bus, "ingest.kiosk.purchase", purchase(program), "m-1")

    assert await consume(consumer, 1) == {"awarded": 1}
    assert await ledger() == [("u-1", "earn", "T-1", 10, 10, "")]


async def test_malformed_messages_are_parked_and_the_consumer_carries_on(bus, consumer,
                                                                        program):
    bad = [
        ("ingest.pos.purchase", b"{not json"),
        ("ingest.pos.purchase", json.dumps({"payload": {"program": program.pk,
                                                        "amount": "5"}}).encode()),
        ("ingest.pos.purchase", purchase(program, amount="lots")),
        ("ingest.web.purchase", purchase(program, transaction_id="T-9").replace(
            f'"program": {program.pk}'.encode(), b'"program": 999999')),
        ("ingest.pos.purchase", purchase(program, transaction_id="T-8", currency="XXX")),
    ]
    for index, (subject, data) in enumerate(bad):
        await send(bus, subject, data, f"bad-{index}")
    await send(bus, "ingest.web.page_view", b'{"user_id": "u-1"}', "view-1")
    await send(bus, "ingest.pos.purchase", purchase(program, transaction_id="T-1"), "good-1")

    assert await consume(consumer, 7) == {"parked": 5, "ignored": 1, "awarded": 1}
    assert await ledger() == [("u-1", "earn", "T-1", 10, 10, "pos")]
    assert await sync_to_async(Member.objects.count)() == 1
    parked = await bus.stream_fetch(DEAD_LETTER_STREAM, "inspect", batch=10, timeout=2)
    assert [(message.subject, message.data, message.headers["Ingest-Error"])
            for message in parked] == [
        ("dead-letter.ingest.pos.purchase", bad[0][1],
         "not an ingest event: JSON is malformed: object keys must be strings (byte 1)"),
        ("dead-letter.ingest.pos.purchase", bad[1][1], "no user_id or device_id"),
        ("dead-letter.ingest.pos.purchase", bad[2][1], "payload.amount 'lots' is not a number"),
        ("dead-letter.ingest.web.purchase", bad[3][1], "no such loyalty program"),
        ("dead-letter.ingest.pos.purchase", bad[4][1],
         "refused: No exchange rate from XXX to USD."),
    ]


async def test_the_consumer_runs_until_stopped(bus, consumer, program):
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    await send(bus, "ingest.pos.purchase", purchase(program), "m-1")

    deadline = time.monotonic() + 10
    while not await ledger():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 5)

    assert await ledger() == [("u-1", "earn", "T-1", 10, 10, "pos")]
