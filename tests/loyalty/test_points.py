"""Earning and redeeming through the services: the arithmetic on real rows, the ledger,
idempotency, refusals that change nothing, tiers, and what reaches the profile and analytics."""

import datetime
import io
from decimal import Decimal

import msgspec
import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics.events import EventType
from bidding.profiles import LoyaltyStatus, profile_key
from campaign_express import platform
from campaign_express.errors import DomainError
from campaigns.models import CurrencyRate
from loyalty import selectors, services
from loyalty.models import LedgerEntry, Member, TierChange
from loyalty.services import effects
from tests.loyalty.loyalty_fixtures import profile_of

pytestmark = pytest.mark.django_db


def earn(program, user_id="u-1", amount="10.00", transaction_id="T-1", **options):
    return services.points_earn(program=program, user_id=user_id, amount=Decimal(amount),
                                transaction_id=transaction_id, **options)


def redeem(program, reward, user_id="u-1", key="R-1"):
    return services.points_redeem(program=program, user_id=user_id, reward_code=reward,
                                  idempotency_key=key)


def state(program, user_id="u-1"):
    member = Member.objects.select_related("tier").get(program=program, user_id=user_id)
    return (member.tier.name, member.balance, member.qualifying_points,
            selectors.ledger_sum(member=member))


def test_the_original_examples_on_real_members(program):
    assert earn(program, "green", "5.00", "T-1").points == 5
    assert earn(program, "referred", "10.00", "T-2", is_referral=True).points == 20
    earn(program, "gold", "500.00", "T-3")  # green earns 500: now gold
    result = earn(program, "gold", "10.00", "T-4")
    assert (result.points, result.balance, result.earn_rate, result.tier) == (
        12, 512, Decimal("1.2"), "gold")


def test_the_amount_is_converted_to_the_program_s_currency_first(program):
    CurrencyRate.objects.create(currency="EUR", units_per_usd=Decimal("0.8"))

    result = earn(program, amount="10.00", currency="EUR")  # 12.50 USD -> 13 points

    assert result.points == 13
    entry = LedgerEntry.objects.get()
    assert entry.details["amount_in_program_currency"] == "12.5"
    with pytest.raises(DomainError) as refused:
        earn(program, amount="10.00", currency="JPY", transaction_id="T-2")
    assert (refused.value.field, refused.value.code) == ("currency", "unknown_currency")


def test_promotions_count_only_between_their_dates_and_channel_bonuses_on_their_channel(
        program):
    now = timezone.now()
    day = datetime.timedelta(days=1)
    services.promotion_save(actor=None, data={"program": program, "name": "Double days",
                                              "multiplier": Decimal(2),
                                              "starts_at": now - day, "ends_at": now + day})
    services.promotion_save(actor=None, data={"program": program, "name": "Ended",
                                              "multiplier": Decimal(3),
                                              "starts_at": now - 3 * day, "ends_at": now - day})
    services.promotion_save(actor=None, data={"program": program, "name": "App bonus",
                                              "channel": "app", "multiplier": Decimal("1.5"),
                                              "starts_at": now - day})

    in_store = earn(program, amount="10.00", transaction_id="T-1", channel="in_store")
    in_app = earn(program, amount="10.00", transaction_id="T-2", channel="app")
    before = earn(program, amount="10.00", transaction_id="T-3", now=now - 2 * day)

    assert (in_store.earn_rate, in_store.points) == (Decimal(2), 20)
    assert (in_app.earn_rate, in_app.points) == (Decimal("2.5"), 25)
    assert (before.earn_rate, before.points) == (Decimal(3), 30)  # only "Ended" ran then


def test_the_same_transaction_id_counts_once_and_returns_the_first_result(program):
    first = earn(program, amount="10.00")
    again = earn(program, amount="999.00")  # a retry: the amount is the first call's

    assert again == services.EarnResult(**{**first.__dict__, "is_replay": True})
    assert state(program) == ("green", 10, 10, 10)
    assert LedgerEntry.objects.count() == 1


def test_a_transaction_id_of_another_member_is_refused_and_changes_nothing(program):
    earn(program, "u-1")

    with pytest.raises(DomainError) as refused:
        earn(program, "u-2")

    assert (refused.value.status, refused.value.code) == (409, "transaction_id_reused")
    assert not Member.objects.filter(user_id="u-2").exists()


def test_a_redeem_spends_points_and_is_idempotent_by_its_key(program):
    earn(program, amount="130.00")

    result = redeem(program, "basic_item")
    again = redeem(program, "basic_item")

    assert (result.points, result.balance, result.reward, result.value) == (
        100, 30, "basic_item", Decimal("3.5000"))
    assert again == services.RedeemResult(**{**result.__dict__, "is_replay": True})
    assert state(program) == ("green", 30, 130, 30)
    member = Member.objects.get(user_id="u-1")
    assert (member.total_redemptions, list(member.ledger.values_list("kind", "points",
                                                                       "balance_after"))) == (
        1, [("redeem", -100, 30), ("earn", 130, 130)])


@pytest.mark.parametrize(("spent", "reward", "code"), [
    ("50.00", "basic_item", "insufficient_points"),
    ("499.00", "exclusive_service", "tier_too_low"),  # 499 points but green, not gold
])
def test_a_redeem_refused_for_balance_or_tier_changes_nothing(program, spent, reward, code):
    earn(program, amount=spent)
    before = (state(program), LedgerEntry.objects.count(), TierChange.objects.count())

    with pytest.raises(DomainError) as refused:
        redeem(program, reward)

    assert (refused.value.status, refused.value.code) == (409, code)
    assert (state(program), LedgerEntry.objects.count(), TierChange.objects.count()) == before
    assert Member.objects.get(user_id="u-1").total_redemptions == 0


def test_redeeming_for_someone_who_is_not_a_member_enrols_nobody(program):
    with pytest.raises(DomainError) as refused:
        redeem(program, "discount", user_id="stranger")

    assert (refused.value.status, refused.value.code) == (404, "not_a_member")
    assert not Member.objects.exists()


def test_a_gold_member_redeems_a_gold_reward(program):
    earn(program, amount="600.00")

    result = redeem(program, "exclusive_service")

    assert (result.points, result.balance, result.tier) == (500, 100, "gold")


def test_tiers_go_up_with_points_and_each_change_is_recorded(program):
    first = earn(program, amount="499.00", transaction_id="T-1")
    to_gold = earn(program, amount="1.00", transaction_id="T-2")
    to_reserve = earn(program, amount="1667.00", transaction_id="T-3")  # ×1.2 = 2000.4 -> 2001

    assert (first.tier, first.tier_changed) == ("green", False)
    assert (to_gold.tier, to_gold.previous_tier, to_gold.tier_changed) == ("gold", "green", True)
    assert (to_reserve.points, to_reserve.tier, to_reserve.previous_tier) == (
        2001, "reserve", "gold")
    assert list(TierChange.objects.order_by("id").values_list(
        "from_tier", "to_tier", "direction", "cause", "qualifying_points")) == [
        ("green", "gold", "up", "earn", 500), ("gold", "reserve", "up", "earn", 2501)]
    assert state(program) == ("reserve", 2501, 2501, 2501)


def test_one_person_is_a_member_of_several_programs(program, other_program):
    earn(program, "u-1", "10.00", "T-1")
    earn(other_program, "u-1", "20.00", "T-1")  # another program: its own transaction ids

    assert state(program) == ("green", 10, 10, 10)
    assert state(other_program) == ("green", 20, 20, 20)


def test_an_inactive_program_earns_nothing(program):
    program = services.program_update(program=program, actor=None, data={"is_active": False})

    with pytest.raises(DomainError) as refused:
        earn(program)

    assert refused.value.code == "program_inactive"
    assert not Member.objects.exists()


def test_after_commit_the_profile_holds_tier_and_balance_and_events_are_emitted(
        program, django_capture_on_commit_callbacks, monkeypatch):
    published = []
    monkeypatch.setattr(effects, "events_publish", lambda events: published.extend(events))

    with django_capture_on_commit_callbacks(execute=True):
        earn(program, "u-profile", amount="500.00")
    with django_capture_on_commit_callbacks(execute=True):
        redeem(program, "discount", user_id="u-profile")

    assert profile_of("u-profile").loyalty[str(program.pk)] == LoyaltyStatus(
        tier="gold", balance=440, bid_boost="1.15")
    assert [(str(event.event_type), event.reason, event.user_id, event.advertiser_id,
             event.attributes) for event in published] == [
        ("loyalty_earn", "purchase", "u-profile", str(program.advertiser_id),
         {"program": str(program.pk), "points": "500", "balance": "500", "tier": "gold",
          "transaction_id": "T-1", "channel": "", "rate": "1.000"}),
        ("loyalty_tier_change", "up", "u-profile", str(program.advertiser_id),
         {"program": str(program.pk), "from_tier": "green", "tier": "gold", "cause": "earn",
          "qualifying_points": "500"}),
        ("loyalty_redeem", "discount", "u-profile", str(program.advertiser_id),
         {"program": str(program.pk), "points": "60", "balance": "440", "tier": "gold",
          "transaction_id": "R-1", "channel": "", "reward": "discount"}),
    ]
    assert [(event.price_micros, event.currency) for event in published] == [
        (500_000_000, "USD"), (0, ""), (2_000_000, "USD")]
    assert published[0].event_type == EventType.LOYALTY_EARN


def test_nothing_reaches_the_profile_when_the_transaction_rolls_back(program):
    # Without the commit (the test's transaction is never committed) no callback runs.
    earn(program, "u-rolled-back")

    assert profile_of("u-rolled-back") is None


def test_profiles_are_rebuilt_from_the_database_after_a_store_lost_them(program):
    earn(program, "u-sync", amount="600.00")
    assert profile_of("u-sync") is None  # not committed: nothing written yet

    call_command("loyalty_profiles_sync", "--program", str(program.pk), stdout=io.StringIO())

    assert profile_of("u-sync").loyalty[str(program.pk)] == LoyaltyStatus(
        tier="gold", balance=600, bid_boost="1.15")


def test_a_changed_bid_boost_rewrites_the_tier_s_members_profiles(
        program, django_capture_on_commit_callbacks):
    earn(program, "u-boost", amount="600.00")
    gold = program.tiers.get(name="gold")

    with django_capture_on_commit_callbacks(execute=True):
        services.tier_update(tier=gold, actor=None, data={"bid_boost": Decimal("1.25")})

    stored = platform.store_call(lambda store: store.get(profile_key("u-boost")))
    assert msgspec.json.decode(stored)["loyalty"][str(program.pk)] == {
        "tier": "gold", "balance": 600, "bid_boost": "1.25"}
