"""The loyalty arithmetic, rule by rule, with exact values (no database)."""

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import pytest

from loyalty import rules


@dataclass(frozen=True)
class T:
    name: str
    qualifying_points: int


TIERS = [T("reserve", 2500), T("green", 0), T("gold", 500)]  # any order


def points(amount: str, rate: Decimal) -> int:
    return rules.earn_points(amount=Decimal(amount), rate=rate)


def rate(tier: str, bonuses: tuple[str, ...] = (), *, referral: bool = False,
         digital: bool = False) -> Decimal:
    return rules.earn_rate(tier_multiplier=Decimal(tier),
                           bonus_multipliers=[Decimal(bonus) for bonus in bonuses],
                           is_referral=referral, is_digital=digital)


def test_the_original_examples():
    assert points("5.00", rate("1.0")) == 5  # 5.00 spent by green
    assert points("10.00", rate("1.2")) == 12  # 10.00 by gold
    assert points("10.00", rate("1.0", referral=True)) == 20  # 10.00 by green, a referral


def test_a_started_unit_counts_whole_and_points_round_up():
    assert points("0.40", rate("1.0")) == 1
    assert points("4.01", rate("1.0")) == 5
    assert points("7.00", rate("1.7")) == 12  # 11.9 -> 12
    assert points("3.00", rate("1.2")) == 4  # 3.6 -> 4
    assert points("10.00", rate("1.2")) == 12  # exactly 12, not 13


def test_promotions_and_channel_bonuses_add_their_multiplier_less_one():
    assert rate("1.2", ("1.5",)) == Decimal("1.7")
    assert rate("1.0", ("1.5", "2")) == Decimal("2.5")
    assert points("10.00", rate("1.0", ("1.5", "2"))) == 25


def test_referral_doubles_and_digital_adds_a_fifth_after_bonuses():
    assert rate("1.2", ("1.5",), referral=True) == Decimal("3.4")
    assert rate("1.0", digital=True) == Decimal("1.2")
    assert rate("1.2", ("1.5",), referral=True, digital=True) == Decimal("4.08")
    assert points("10.00", rate("1.2", ("1.5",), referral=True, digital=True)) == 41  # 40.8


def test_nothing_to_earn_earns_nothing():
    assert points("0", rate("1.0")) == 0
    assert points("-5", rate("1.0")) == 0


@pytest.mark.parametrize(("qualifying", "tier"), [
    (0, "green"), (499, "green"), (500, "gold"), (2499, "gold"), (2500, "reserve"),
    (99_999, "reserve")])
def test_the_tier_is_the_highest_threshold_reached(qualifying, tier):
    assert rules.tier_for(TIERS, qualifying).name == tier


def test_a_tier_earned_in_one_period_holds_through_the_next():
    assert rules.tier_points(qualifying_points=40, previous_qualifying_points=600) == 600
    assert rules.tier_points(qualifying_points=700, previous_qualifying_points=0) == 700


def test_next_tier_and_progress():
    assert rules.next_tier(TIERS, T("green", 0)) == T("gold", 500)
    assert rules.next_tier(TIERS, T("reserve", 2500)) is None
    assert rules.tier_progress(points=250, next_threshold=500) == Decimal("0.500")
    assert rules.tier_progress(points=1, next_threshold=3) == Decimal("0.333")
    assert rules.tier_progress(points=900, next_threshold=None) == Decimal(1)


def test_qualifying_periods_roll_from_the_member_s_own_start():
    start = date(2025, 3, 10)
    assert rules.period_after_resets(start=start, months=12, today=date(2026, 3, 9)) == (
        start, 0)
    assert rules.period_after_resets(start=start, months=12, today=date(2026, 3, 10)) == (
        date(2026, 3, 10), 1)
    assert rules.period_after_resets(start=start, months=12, today=date(2027, 6, 1)) == (
        date(2027, 3, 10), 2)
    assert rules.period_after_resets(start=date(2024, 1, 31), months=1,
                                     today=date(2024, 3, 1)) == (date(2024, 2, 29), 1)
    assert rules.add_months(date(2024, 2, 29), 12) == date(2025, 2, 28)
    assert rules.add_months(date(2025, 3, 10), -12) == date(2024, 3, 10)


def test_expiry_takes_what_recent_credits_do_not_cover():
    assert rules.expiring_points(balance=300, recent_credits=120) == 180
    assert rules.expiring_points(balance=100, recent_credits=120) == 0  # spent oldest first
    assert rules.expiring_points(balance=120, recent_credits=120) == 0  # a second run
    assert rules.expiring_points(balance=50, recent_credits=0) == 50


def test_birthday_rewards_inside_the_window_once_a_year():
    birthday = date(1990, 6, 15)
    due = rules.birthday_year_due
    assert due(birthday=birthday, today=date(2026, 6, 14), window_days=1,
               last_rewarded_year=None) == 2026
    assert due(birthday=birthday, today=date(2026, 6, 13), window_days=1,
               last_rewarded_year=None) is None
    assert due(birthday=birthday, today=date(2026, 6, 8), window_days=7,
               last_rewarded_year=2025) == 2026
    assert due(birthday=birthday, today=date(2026, 6, 15), window_days=30,
               last_rewarded_year=2026) is None


def test_birthday_windows_cross_the_new_year_and_29_february_falls_on_the_28th():
    due = rules.birthday_year_due
    assert due(birthday=date(1980, 1, 2), today=date(2025, 12, 28), window_days=7,
               last_rewarded_year=2025) == 2026
    assert due(birthday=date(1980, 12, 30), today=date(2026, 1, 3), window_days=7,
               last_rewarded_year=2024) == 2025
    assert due(birthday=date(1980, 12, 30), today=date(2026, 1, 3), window_days=7,
               last_rewarded_year=2025) is None
    assert due(birthday=date(1992, 2, 29), today=date(2026, 2, 28), window_days=0,
               last_rewarded_year=None) == 2026
