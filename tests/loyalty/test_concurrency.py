"""Many earns and redeems on one member at once, on PostgreSQL: each thread its own
connection and transaction, all released together. No point is lost or doubled, a repeated
transaction id or idempotency key counts once, and the balance never goes below zero."""

import threading
from collections import Counter
from decimal import Decimal

import pytest
from django.db import connection

from campaign_express.errors import DomainError
from loyalty import selectors, services
from loyalty.models import LedgerEntry, Member
from loyalty.services import effects

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def run_at_once(calls):
    """Run each call on its own thread, released together; results or the DomainError."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def work(index, call):
        try:
            barrier.wait()
            results[index] = call()
        except DomainError as error:
            results[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(index, call))
               for index, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


@pytest.fixture
def published(monkeypatch):
    events = []
    monkeypatch.setattr(effects, "events_publish", lambda batch: events.extend(batch))
    return events


@pytest.fixture(autouse=True)
def on_postgres():
    assert connection.vendor == "postgresql", "set DATABASE_URL to a PostgreSQL database"


def earn(program, transaction_id, amount="10.00"):
    return lambda: services.points_earn(program=program, user_id="u-1", amount=Decimal(amount),
                                        transaction_id=transaction_id)


def redeem(program, key, reward="discount"):
    return lambda: services.points_redeem(program=program, user_id="u-1", reward_code=reward,
                                          idempotency_key=key)


def test_concurrent_earns_and_redeems_lose_and_double_nothing(program, published):
    services.points_earn(program=program, user_id="u-1", amount=Decimal("1000.00"),
                         transaction_id="opening")
    # 30 earns of 10 points with 20 distinct ids, 20 redeems of 60 with 12 distinct keys.
    calls = ([earn(program, f"T-{index % 20}") for index in range(30)]
             + [redeem(program, f"R-{index % 12}") for index in range(20)])

    results = run_at_once(calls)

    assert not [result for result in results if isinstance(result, DomainError)]
    member = Member.objects.get(user_id="u-1")
    kinds = Counter(LedgerEntry.objects.filter(member=member).values_list("kind", flat=True))
    assert kinds == {"earn": 21, "redeem": 12}
    # Gold from the opening 1000: every later earn is at 1.2, so 12 points each.
    assert (member.tier.name, member.balance) == ("gold", 1000 + 20 * 12 - 12 * 60)
    assert selectors.ledger_sum(member=member) == member.balance
    assert member.total_redemptions == 12
    replays = Counter(result.is_replay for result in results)
    assert replays == {False: 32, True: 18}
    assert Counter(str(event.event_type) for event in published) == {
        "loyalty_earn": 21, "loyalty_redeem": 12, "loyalty_tier_change": 1}


def test_concurrent_redeems_never_take_the_balance_below_zero(program):
    services.points_earn(program=program, user_id="u-1", amount=Decimal("100.00"),
                         transaction_id="opening")

    results = run_at_once([redeem(program, f"R-{index}") for index in range(10)])

    refused = [result for result in results if isinstance(result, DomainError)]
    assert len(refused) == 9
    assert {error.code for error in refused} == {"insufficient_points"}
    member = Member.objects.get(user_id="u-1")
    assert (member.balance, member.total_redemptions) == (40, 1)
    assert list(member.ledger.order_by("id").values_list("kind", "points", "balance_after")) == [
        ("earn", 100, 100), ("redeem", -60, 40)]


def test_concurrent_first_purchases_enrol_the_member_once(program):
    results = run_at_once([earn(program, f"T-{index}") for index in range(12)])

    assert all(result.points == 10 for result in results)
    member = Member.objects.get(user_id="u-1")
    assert (Member.objects.count(), member.balance, member.ledger.count()) == (1, 120, 12)
    assert sorted(result.balance for result in results) == list(range(10, 130, 10))
