"""The loyalty arithmetic as pure functions: earn rate and points, tiers, qualifying periods,
expiry and birthdays.

Apart from the services so each rule is tested on its own with exact values. Money is Decimal
and points are integers throughout; nothing here rounds except where a rule says so.

Django-free.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import ROUND_CEILING, Decimal
from typing import Protocol, TypeVar

REFERRAL_MULTIPLIER = Decimal(2)
DIGITAL_MULTIPLIER = Decimal("1.2")


class HasThreshold(Protocol):
    @property
    def qualifying_points(self) -> int: ...


TierT = TypeVar("TierT", bound=HasThreshold)


def ceiling(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def earn_rate(*, tier_multiplier: Decimal, bonus_multipliers: Iterable[Decimal],
              is_referral: bool = False, is_digital: bool = False) -> Decimal:
    """The tier's multiplier plus (multiplier − 1) for each running promotion and matching
    channel bonus; then ×2 for a referral and ×1.2 for a digital purchase."""
    rate = tier_multiplier + sum((multiplier - 1 for multiplier in bonus_multipliers),
                                 Decimal(0))
    if is_referral:
        rate *= REFERRAL_MULTIPLIER
    if is_digital:
        rate *= DIGITAL_MULTIPLIER
    return rate


def earn_points(*, amount: Decimal, rate: Decimal) -> int:
    """1 point per unit of the program's currency, a started unit counting whole, times the
    rate, rounded up: 5.00 at 1.0 is 5, 10.00 at 1.2 is 12, 0.40 at 1.0 is 1."""
    if amount <= 0 or rate <= 0:
        return 0
    return ceiling(ceiling(amount) * rate)


def tier_for(tiers: Sequence[TierT], points: int) -> TierT:
    """The highest tier whose threshold ``points`` reaches; the lowest when it reaches none.
    ``tiers`` in any order, at least one."""
    ordered = sorted(tiers, key=lambda tier: tier.qualifying_points)
    chosen = ordered[0]
    for tier in ordered:
        if points >= tier.qualifying_points:
            chosen = tier
    return chosen


def next_tier(tiers: Sequence[TierT], current: TierT) -> TierT | None:
    above = [tier for tier in tiers if tier.qualifying_points > current.qualifying_points]
    return min(above, key=lambda tier: tier.qualifying_points) if above else None


def tier_points(*, qualifying_points: int, previous_qualifying_points: int) -> int:
    """What decides the tier: the better of this period and the last, so a tier earned in one
    period is kept through the next and lost only if the next does not earn it again."""
    return max(qualifying_points, previous_qualifying_points)


def tier_progress(*, points: int, next_threshold: int | None) -> Decimal:
    """Share of the way to the next tier, 0 to 1 (1 in the top tier), to 3 places."""
    if next_threshold is None or next_threshold <= 0:
        return Decimal(1)
    return min(Decimal(1), Decimal(points) / Decimal(next_threshold)).quantize(Decimal("0.001"))


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later; the month's last day when it is shorter."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def period_after_resets(*, start: date, months: int, today: date) -> tuple[date, int]:
    """The start of the qualifying period ``today`` falls in, and how many periods ended since
    ``start``. Periods follow each other from the member's own start (rolling, not calendar)."""
    ended = 0
    while add_months(start, (ended + 1) * months) <= today:
        ended += 1
    return add_months(start, ended * months), ended


def expiring_points(*, balance: int, recent_credits: int) -> int:
    """Points to expire: the balance not covered by points added since the cutoff.

    Redemptions spend the oldest points first, so what is left of the balance is the newest
    credits; whatever exceeds the credits since the cutoff is older than the cutoff. Running it
    again right after expires nothing more.
    """
    return max(0, balance - max(0, recent_credits))


def anniversary(birthday: date, year: int) -> date:
    """The birthday in ``year``; 29 February is the 28th in other years."""
    if birthday.month == 2 and birthday.day == 29 and not calendar.isleap(year):
        return date(year, 2, 28)
    return birthday.replace(year=year)


def birthday_year_due(*, birthday: date, today: date, window_days: int,
                      last_rewarded_year: int | None) -> int | None:
    """The year of the birthday whose reward is due today (``today`` within ``window_days``
    of it and not rewarded yet), or None. Windows may cross the new year."""
    for year in (today.year - 1, today.year, today.year + 1):
        if last_rewarded_year is not None and year <= last_rewarded_year:
            continue
        if abs((today - anniversary(birthday, year)).days) <= window_days:
            return year
    return None
