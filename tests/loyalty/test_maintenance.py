"""The daily task: qualifying-period resets and downgrades, expiry, birthday rewards; each
idempotent, so a second run the same day changes nothing. Time is passed in, not slept."""

import datetime
from decimal import Decimal

import pytest
from django.utils import timezone

from loyalty import selectors, services, tasks
from loyalty.models import LedgerEntry, Member, TierChange
from loyalty.services import maintenance

pytestmark = pytest.mark.django_db

START = datetime.datetime(2025, 3, 10, 12, 0, tzinfo=datetime.UTC)


def at(days: int) -> datetime.datetime:
    return START + datetime.timedelta(days=days)


def earn(program, user_id, amount, transaction_id, days):
    return services.points_earn(program=program, user_id=user_id, amount=Decimal(amount),
                                transaction_id=transaction_id, now=at(days))


def member(user_id="u-1"):
    found = Member.objects.select_related("tier").get(user_id=user_id)
    return (found.tier.name, found.balance, found.qualifying_points,
            found.previous_qualifying_points, found.qualifying_period_start)


def test_old_points_of_an_expiring_tier_expire_once(program):
    earn(program, "u-1", "300.00", "T-1", days=0)
    earn(program, "u-1", "120.00", "T-2", days=100)
    services.points_redeem(program=program, user_id="u-1", reward_code="basic_item",
                           idempotency_key="R-1", now=at(110))  # spends the oldest points
    earn(program, "gold-1", "600.00", "T-3", days=0)  # gold: points do not expire

    first = maintenance.members_maintain(now=at(200))  # cutoff: day 20
    again = maintenance.members_maintain(now=at(200) + datetime.timedelta(hours=5))

    assert first == {"members": 1, "expired_points": 200}
    assert again == {"members": 1}
    assert member("u-1")[:2] == ("green", 120)
    assert member("gold-1")[:2] == ("gold", 600)
    entry = LedgerEntry.objects.get(kind="expire")
    assert (entry.points, entry.balance_after, entry.transaction_id) == (
        -200, 120, f"expire:{entry.member_id}:2025-09-26")
    found = Member.objects.get(user_id="u-1")
    assert selectors.ledger_sum(member=found) == found.balance == 120


def test_a_tier_holds_through_the_next_period_then_drops_at_the_reset(program):
    earn(program, "u-1", "600.00", "T-1", days=0)  # gold
    assert member() == ("gold", 600, 600, 0, datetime.date(2025, 3, 10))

    kept = maintenance.members_maintain(now=at(366))  # 2026-03-11: one period ended
    assert kept == {"members": 1, "resets": 1}
    assert member() == ("gold", 600, 0, 600, datetime.date(2026, 3, 10))

    earn(program, "u-1", "40.00", "T-2", days=731)  # gold: 48 points, before the day's run
    dropped = maintenance.members_maintain(now=at(731) + datetime.timedelta(hours=6))
    again = maintenance.members_maintain(now=at(731) + datetime.timedelta(hours=7))

    # The second period earned nothing: green again, and green points expire (not the new 48).
    assert dropped == {"members": 1, "resets": 1, "tier_down": 1, "expired_points": 600}
    assert again == {"members": 1}
    assert member() == ("green", 48, 48, 0, datetime.date(2027, 3, 10))
    assert list(TierChange.objects.order_by("id").values_list(
        "from_tier", "to_tier", "direction", "cause")) == [
        ("green", "gold", "up", "earn"), ("gold", "green", "down", "period_reset")]


def test_birthday_points_inside_the_tier_s_window_once_a_year(program):
    today = timezone.now()
    in_three_days = (today + datetime.timedelta(days=3)).date()
    services.points_earn(program=program, user_id="gold-1", amount=Decimal("600.00"),
                         transaction_id="T-1", now=today)
    services.member_update(member=Member.objects.get(user_id="gold-1"), actor=None,
                           data={"birthday": in_three_days.replace(year=1992)})
    services.member_enroll(actor=None, program=program, user_id="green-1",
                           birthday=in_three_days.replace(year=1996))  # window of 1 day

    first = maintenance.members_maintain(now=today)
    again = maintenance.members_maintain(now=today + datetime.timedelta(hours=1))

    assert first == {"members": 2, "birthday_rewards": 1}
    assert again == {"members": 2}
    gold = Member.objects.get(user_id="gold-1")
    assert (gold.balance, gold.lifetime_points, gold.birthday_reward_year) == (
        650, 650, in_three_days.year)
    assert list(gold.ledger.values_list("kind", "points", "transaction_id")) == [
        ("birthday", 50, f"birthday:{gold.pk}:{in_three_days.year}"),
        ("earn", 600, "T-1")]
    assert Member.objects.get(user_id="green-1").balance == 0


def test_the_beat_task_runs_the_daily_work(program):
    services.member_enroll(actor=None, program=program, user_id="u-1",
                           birthday=timezone.now().date().replace(year=1992))

    assert tasks.members_maintain() == {"members": 1, "birthday_rewards": 1}
    assert tasks.members_maintain() == {"members": 1}
    assert Member.objects.get(user_id="u-1").balance == 50


def test_changed_thresholds_move_members_to_the_tier_their_points_earn(
        program, django_capture_on_commit_callbacks):
    services.points_earn(program=program, user_id="u-1", amount=Decimal("600.00"),
                         transaction_id="T-1")
    gold = program.tiers.get(name="gold")

    with django_capture_on_commit_callbacks(execute=True):
        services.tier_update(tier=gold, actor=None, data={"qualifying_points": 1000})

    assert member()[0] == "green"
    change = TierChange.objects.order_by("id").last()
    assert (change.from_tier, change.to_tier, change.direction, change.cause) == (
        "gold", "green", "down", "tiers_changed")
