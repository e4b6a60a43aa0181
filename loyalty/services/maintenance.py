"""The daily work on members: qualifying-period resets, tier evaluation, point expiry and
birthday rewards; and re-evaluation after a program's tiers changed.

Each member is handled in its own short transaction under its row lock, as earns and redeems
are, so the daily run never holds a lock for long nor races a purchase. Every step is
idempotent, so running the task twice a day, or again after a failure, changes nothing more:
a reset moves the period start forward (a second run finds no period ended), expiry is keyed
by member and day in the ledger and leaves nothing to expire behind it, and a birthday reward
is keyed by member and year.
"""

from __future__ import annotations

import datetime
from collections import Counter

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from analytics.events import EventType
from loyalty import rules, selectors
from loyalty.models import LedgerEntry, Member, Program, Tier
from loyalty.services.effects import EventContext, MemberChange, change_on_commit
from loyalty.services.points import tier_change_event, tier_evaluate

Kind = LedgerEntry.Kind


def _midnight(day: datetime.date) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time.min, tzinfo=datetime.UTC)


def _reset(member: Member, program: Program, today: datetime.date) -> bool:
    """Start the period ``today`` falls in. Its points and the last ended period's are counted
    again from the ledger, so a purchase made on the reset day before the run is not lost."""
    start, ended = rules.period_after_resets(start=member.qualifying_period_start,
                                             months=program.qualifying_period_months,
                                             today=today)
    if not ended:
        return False
    previous_start = rules.add_months(start, -program.qualifying_period_months)
    member.previous_qualifying_points = selectors.earned_between(
        member=member, start=_midnight(previous_start), end=_midnight(start))
    member.qualifying_points = selectors.earned_between(member=member, start=_midnight(start))
    member.qualifying_period_start = start
    return True


def _expire(member: Member, program: Program, now: datetime.datetime) -> LedgerEntry | None:
    if not member.tier.points_expire or member.balance <= 0:
        return None
    transaction_id = f"expire:{member.pk}:{now.date().isoformat()}"
    if LedgerEntry.objects.filter(program=program, kind=Kind.EXPIRE,
                                  transaction_id=transaction_id).exists():
        return None
    cutoff = now - datetime.timedelta(days=program.points_expiry_days)
    points = rules.expiring_points(balance=member.balance,
                                   recent_credits=selectors.credits_since(member=member,
                                                                          since=cutoff))
    if not points:
        return None
    member.balance -= points
    return LedgerEntry.objects.create(
        program=program, member=member, kind=Kind.EXPIRE, transaction_id=transaction_id,
        points=-points, balance_after=member.balance, created_at=now,
        reason=f"points older than {program.points_expiry_days} days expired",
        details={"cutoff": cutoff.isoformat(), "tier": member.tier.name})


def _birthday(member: Member, program: Program, now: datetime.datetime) -> LedgerEntry | None:
    if member.birthday is None or not program.birthday_points:
        return None
    year = rules.birthday_year_due(birthday=member.birthday, today=now.date(),
                                   window_days=member.tier.birthday_window_days,
                                   last_rewarded_year=member.birthday_reward_year)
    if year is None:
        return None
    points = program.birthday_points
    member.balance += points
    member.lifetime_points += points
    member.birthday_reward_year = year
    return LedgerEntry.objects.create(
        program=program, member=member, kind=Kind.BIRTHDAY,
        transaction_id=f"birthday:{member.pk}:{year}", points=points,
        balance_after=member.balance, reason=f"birthday {year}", created_at=now,
        details={"year": year, "tier": member.tier.name})


def member_maintain(*, member_id: int, now: datetime.datetime | None = None,
                    cause: str = "daily") -> dict[str, int]:
    """Bring one member up to date; what was done, as counts."""
    now = now or timezone.now()
    done: Counter[str] = Counter()
    with transaction.atomic():
        member = (Member.objects.select_for_update(of=("self",))
                  .select_related("tier", "program").get(pk=member_id))
        program = member.program
        if _reset(member, program, now.date()):
            done["resets"] += 1
            cause = "period_reset"
        tier_change = tier_evaluate(member=member, tiers=selectors.program_tiers(program=program),
                                    cause=cause, now=now)
        expired = _expire(member, program, now)
        birthday = _birthday(member, program, now)
        if not (done or tier_change or expired or birthday):
            return {}
        member.save(update_fields=["previous_qualifying_points", "qualifying_points",
                                   "qualifying_period_start", "tier", "balance",
                                   "lifetime_points", "birthday_reward_year", "updated_at"])
        context = EventContext(advertiser_id=program.advertiser_id, program_id=program.pk,
                               user_id=member.user_id)
        events = []
        if tier_change is not None:
            done[f"tier_{tier_change.direction}"] += 1
            events.append(tier_change_event(context, tier_change))
        if expired is not None:
            done["expired_points"] += -expired.points
        if birthday is not None:
            done["birthday_rewards"] += 1
            events.append(context.event(EventType.LOYALTY_EARN, reason="birthday", attributes={
                "points": str(birthday.points), "balance": str(member.balance),
                "tier": member.tier.name, "transaction_id": birthday.transaction_id}))
        change_on_commit(MemberChange(member_id=member.pk, events=tuple(events),
                                      expired_points=-expired.points if expired else 0))
    return dict(done)


def _due(program: Program, today: datetime.date) -> Q:
    """Members the daily run may have work for: a period ended, points that may expire, a
    birthday set (the rule decides whether its window is open)."""
    period_ended = Q(qualifying_period_start__lte=rules.add_months(
        today, -program.qualifying_period_months))
    may_expire = Q(tier__points_expire=True, balance__gt=0)
    return period_ended | may_expire | Q(birthday__isnull=False)


def members_maintain(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """The daily run over every active program's members."""
    now = now or timezone.now()
    totals: Counter[str] = Counter()
    for program in Program.objects.filter(is_active=True).order_by("pk"):
        due = (Member.objects.filter(program=program).filter(_due(program, now.date()))
               .order_by("pk").values_list("pk", flat=True))
        for member_id in due.iterator(chunk_size=1000):
            totals["members"] += 1
            totals.update(member_maintain(member_id=member_id, now=now))
    return dict(totals)


def program_members_evaluate(*, program_id: int, now: datetime.datetime | None = None) -> int:
    """After the program's tiers changed: move each member to the tier their points now earn;
    how many moved."""
    now = now or timezone.now()
    moved = 0
    tiers: list[Tier] = selectors.program_tiers(program=Program.objects.get(pk=program_id))
    thresholds = {tier.pk: tier.qualifying_points for tier in tiers}
    members = Member.objects.filter(program_id=program_id).order_by("pk")
    for member_id, tier_id, points, previous in members.values_list(
            "pk", "tier_id", "qualifying_points", "previous_qualifying_points").iterator(
            chunk_size=1000):
        target = rules.tier_for(tiers, rules.tier_points(qualifying_points=points,
                                                         previous_qualifying_points=previous))
        if target.pk != tier_id or tier_id not in thresholds:
            moved += bool(member_maintain(member_id=member_id, now=now, cause="tiers_changed"))
    return moved
