"""Earning and redeeming points: the ledger, the balance and the tier, exactly and at once.

Each call is one short transaction holding the member row's lock (``select_for_update``), so
concurrent earns and redeems of one member queue up and each sees the balance the previous
left: none is lost, doubled or taken below zero (a database constraint holds that last rule
too). Idempotency rests on the ledger's unique (program, kind, transaction id): a repeated
call finds its entry and answers with the first call's result, whether it arrives after the
first committed (the look-up) or while it is in flight (the lock, or the constraint when two
members race with one id). A refused call raises `DomainError` and changes nothing.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.utils import timezone

from analytics.events import Event, EventType
from bidding.pricing import UnknownCurrency, convert
from campaign_express.errors import DomainError
from campaigns.models import CurrencyRate
from loyalty import rules, selectors
from loyalty.models import LedgerEntry, Member, Program, Reward, Tier, TierChange
from loyalty.services.effects import EventContext, MemberChange, change_on_commit

Kind = LedgerEntry.Kind
MAX_ID_LENGTH = 200


@dataclass(frozen=True)
class EarnResult:
    member: str
    transaction_id: str
    points: int
    balance: int
    earn_rate: Decimal
    tier: str
    previous_tier: str | None  # the tier before, when this earn changed it
    is_replay: bool = False

    @property
    def tier_changed(self) -> bool:
        return self.previous_tier is not None


@dataclass(frozen=True)
class RedeemResult:
    member: str
    idempotency_key: str
    reward: str
    description: str
    value: Decimal
    points: int  # points taken, positive
    balance: int
    tier: str
    is_replay: bool = False


# --- shared ----------------------------------------------------------------------------------

def _check_id(value: str, field: str) -> str:
    value = (value or "").strip()
    if not value:
        raise DomainError("This field is required.", field=field)
    if len(value) > MAX_ID_LENGTH:
        raise DomainError(f"At most {MAX_ID_LENGTH} characters.", field=field)
    return value


def _check_active(program: Program) -> None:
    if not program.is_active:
        raise DomainError(f"The program {program.name!r} is not active.", status=409,
                          code="program_inactive")


def _lock(program: Program, user_id: str) -> Member:
    """The member row, locked until the transaction ends; Member.DoesNotExist when absent."""
    return (Member.objects.select_for_update(of=("self",)).select_related("tier")
            .get(program=program, user_id=user_id))


def lock_or_enroll(program: Program, user_id: str, tiers: list[Tier],
                    now: datetime.datetime) -> Member:
    try:
        return _lock(program, user_id)
    except Member.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            Member.objects.create(program=program, user_id=user_id, tier=tiers[0],
                                  qualifying_period_start=now.date(), enrolled_at=now)
    except IntegrityError:
        pass  # a concurrent call enrolled them first; lock their row instead
    return _lock(program, user_id)


def tier_evaluate(*, member: Member, tiers: list[Tier], cause: str,
                  now: datetime.datetime) -> TierChange | None:
    """Move the (locked) member to the tier their points earn, recording the change; the
    caller saves the member."""
    target = rules.tier_for(tiers, rules.tier_points(
        qualifying_points=member.qualifying_points,
        previous_qualifying_points=member.previous_qualifying_points))
    if target.pk == member.tier_id:
        return None
    previous = member.tier
    member.tier = target
    direction = (TierChange.Direction.UP if target.qualifying_points > previous.qualifying_points
                 else TierChange.Direction.DOWN)
    return TierChange.objects.create(member=member, from_tier=previous.name, to_tier=target.name,
                                     direction=direction, cause=cause,
                                     qualifying_points=member.qualifying_points, created_at=now)


def tier_change_event(context: EventContext, change: TierChange) -> Event:
    return context.event(EventType.LOYALTY_TIER_CHANGE, reason=change.direction, attributes={
        "from_tier": change.from_tier, "tier": change.to_tier, "cause": change.cause,
        "qualifying_points": str(change.qualifying_points)})


def _context(program: Program, member: Member) -> EventContext:
    return EventContext(advertiser_id=program.advertiser_id, program_id=program.pk,
                        user_id=member.user_id)


def _rates() -> dict[str, Decimal]:
    return dict(CurrencyRate.objects.values_list("currency", "units_per_usd"))


def _in_program_currency(program: Program, amount: Decimal, currency: str) -> Decimal:
    try:
        return convert(amount, source=currency, target=program.currency, usd_rates=_rates())
    except UnknownCurrency as error:
        raise DomainError(f"No exchange rate from {currency} to {program.currency}.",
                          field="currency", code="unknown_currency") from error


# --- earn ------------------------------------------------------------------------------------

def _earn_result(entry: LedgerEntry, *, is_replay: bool) -> EarnResult:
    details = entry.details
    changed = details["tier_before"] != details["tier_after"]
    return EarnResult(member=entry.member.user_id, transaction_id=entry.transaction_id,
                      points=entry.points, balance=entry.balance_after,
                      earn_rate=Decimal(details["rate"]), tier=details["tier_after"],
                      previous_tier=details["tier_before"] if changed else None,
                      is_replay=is_replay)


def _earn_replay(program: Program, transaction_id: str, user_id: str) -> EarnResult | None:
    entry = (LedgerEntry.objects.select_related("member")
             .filter(program=program, kind=Kind.EARN, transaction_id=transaction_id).first())
    if entry is None:
        return None
    if entry.member.user_id != user_id:
        raise DomainError(f"Transaction {transaction_id!r} already earned points for another "
                          "member.", field="transaction_id", status=409,
                          code="transaction_id_reused")
    return _earn_result(entry, is_replay=True)


def points_earn(*, program: Program, user_id: str, amount: Decimal, currency: str = "",
                channel: str = "", transaction_id: str, is_referral: bool = False,
                is_digital: bool = False, now: datetime.datetime | None = None) -> EarnResult:
    """Award the points a purchase earns, enrolling the buyer on their first purchase.

    The amount is converted to the program's currency, 1 point per unit rounded up, times the
    earn rate (`loyalty.rules.earn_rate`), rounded up. The same transaction id again returns
    the first result and adds nothing.
    """
    now = now or timezone.now()
    user_id = _check_id(user_id, "member")
    transaction_id = _check_id(transaction_id, "transaction_id")
    replay = _earn_replay(program, transaction_id, user_id)
    if replay is not None:
        return replay
    _check_active(program)
    currency = (currency or program.currency).upper()
    if amount <= 0:
        raise DomainError("The amount must be more than 0.", field="amount")
    converted = _in_program_currency(program, amount, currency)
    try:
        with transaction.atomic():
            tiers = selectors.program_tiers(program=program)
            member = lock_or_enroll(program, user_id, tiers, now)
            replay = _earn_replay(program, transaction_id, user_id)
            if replay is not None:
                return replay
            rate = rules.earn_rate(
                tier_multiplier=member.tier.earn_multiplier,
                bonus_multipliers=selectors.promotion_multipliers(program=program,
                                                                  channel=channel, now=now),
                is_referral=is_referral, is_digital=is_digital)
            points = rules.earn_points(amount=converted, rate=rate)
            tier_before = member.tier.name
            member.balance += points
            member.qualifying_points += points
            member.lifetime_points += points
            member.last_earn_at = now
            tier_change = tier_evaluate(member=member, tiers=tiers, cause="earn", now=now)
            member.save(update_fields=["balance", "qualifying_points", "lifetime_points",
                                       "last_earn_at", "tier", "updated_at"])
            entry = LedgerEntry.objects.create(
                program=program, member=member, kind=Kind.EARN, transaction_id=transaction_id,
                points=points, balance_after=member.balance, channel=channel,
                reason=f"purchase of {amount} {currency}"[:200], created_at=now,
                details={"amount": str(amount), "currency": currency,
                         "amount_in_program_currency": str(converted), "rate": str(rate),
                         "referral": is_referral, "digital": is_digital,
                         "tier_before": tier_before, "tier_after": member.tier.name})
            context = _context(program, member)
            events = [context.event(
                EventType.LOYALTY_EARN, reason="purchase", price=converted,
                currency=program.currency,
                attributes={"points": str(points), "balance": str(member.balance),
                            "tier": member.tier.name, "transaction_id": transaction_id,
                            "channel": channel, "rate": str(rate)})]
            if tier_change is not None:
                events.append(tier_change_event(context, tier_change))
            change_on_commit(MemberChange(member_id=member.pk, events=tuple(events)))
    except IntegrityError:
        # Another member's earn took this transaction id between our look-ups.
        replay = _earn_replay(program, transaction_id, user_id)
        if replay is None:
            raise
        return replay
    return _earn_result(entry, is_replay=False)


# --- redeem ----------------------------------------------------------------------------------

def _redeem_result(entry: LedgerEntry, *, is_replay: bool) -> RedeemResult:
    details = entry.details
    return RedeemResult(member=entry.member.user_id, idempotency_key=entry.transaction_id,
                        reward=details["reward"], description=details["description"],
                        value=Decimal(details["value"]), points=-entry.points,
                        balance=entry.balance_after, tier=details["tier"], is_replay=is_replay)


def _redeem_replay(program: Program, key: str, user_id: str) -> RedeemResult | None:
    entry = (LedgerEntry.objects.select_related("member")
             .filter(program=program, kind=Kind.REDEEM, transaction_id=key).first())
    if entry is None:
        return None
    if entry.member.user_id != user_id:
        raise DomainError(f"Idempotency key {key!r} was used for another member.",
                          field="idempotency_key", status=409, code="idempotency_key_reused")
    return _redeem_result(entry, is_replay=True)


def _check_can_redeem(member: Member, reward: Reward) -> None:
    if reward.min_tier is not None and (
            member.tier.qualifying_points < reward.min_tier.qualifying_points):
        raise DomainError(f"{reward.code} needs the {reward.min_tier.name} tier or above; the "
                          f"member is {member.tier.name}.", field="reward", status=409,
                          code="tier_too_low")
    if member.balance < reward.points_cost:
        raise DomainError(f"{reward.code} costs {reward.points_cost} points; the balance is "
                          f"{member.balance}.", field="reward", status=409,
                          code="insufficient_points")


def points_redeem(*, program: Program, user_id: str, reward_code: str, channel: str = "",
                  idempotency_key: str, now: datetime.datetime | None = None) -> RedeemResult:
    """Spend a member's points on a reward. Refused (nothing changes) when the member's tier
    is below the reward's or the balance is short; the same key again returns the first
    result."""
    now = now or timezone.now()
    user_id = _check_id(user_id, "member")
    key = _check_id(idempotency_key, "idempotency_key")
    replay = _redeem_replay(program, key, user_id)
    if replay is not None:
        return replay
    _check_active(program)
    reward = (Reward.objects.select_related("min_tier")
              .filter(program=program, code=reward_code, is_active=True).first())
    if reward is None:
        raise DomainError(f"No active reward {reward_code!r} in this program.", field="reward",
                          code="unknown_reward")
    try:
        with transaction.atomic():
            try:
                member = _lock(program, user_id)
            except Member.DoesNotExist:
                raise DomainError(f"{user_id!r} is not a member of this program.",
                                  field="member", status=404, code="not_a_member") from None
            replay = _redeem_replay(program, key, user_id)
            if replay is not None:
                return replay
            _check_can_redeem(member, reward)
            member.balance -= reward.points_cost
            member.total_redemptions += 1
            member.last_redeem_at = now
            tier_change = tier_evaluate(member=member, tiers=selectors.program_tiers(
                program=program), cause="redeem", now=now)
            member.save(update_fields=["balance", "total_redemptions", "last_redeem_at", "tier",
                                       "updated_at"])
            entry = LedgerEntry.objects.create(
                program=program, member=member, kind=Kind.REDEEM, transaction_id=key,
                points=-reward.points_cost, balance_after=member.balance, channel=channel,
                reward=reward, reason=f"reward {reward.code}", created_at=now,
                details={"reward": reward.code, "description": reward.description,
                         "value": str(reward.value), "tier": member.tier.name})
            context = _context(program, member)
            events = [context.event(
                EventType.LOYALTY_REDEEM, reason=reward.code, price=reward.value,
                currency=program.currency,
                attributes={"points": str(reward.points_cost), "balance": str(member.balance),
                            "tier": member.tier.name, "transaction_id": key,
                            "channel": channel, "reward": reward.code})]
            if tier_change is not None:
                events.append(tier_change_event(context, tier_change))
            change_on_commit(MemberChange(member_id=member.pk, events=tuple(events)))
    except IntegrityError:
        replay = _redeem_replay(program, key, user_id)
        if replay is None:
            raise
        return replay
    return _redeem_result(entry, is_replay=False)
