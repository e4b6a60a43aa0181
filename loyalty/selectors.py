"""Reads: scoped to the advertisers a user may see, and the lookups the services, the
snapshot compiler and campaign validation need."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet, Sum

from campaigns.models import Campaign
from campaigns.selectors import advertiser_list, user_sees_all_advertisers
from loyalty import rules
from loyalty.models import (
    ApiKey,
    LedgerEntry,
    Member,
    Program,
    Promotion,
    Reward,
    Tier,
    TierChange,
)


def program_list(*, user: AbstractBaseUser) -> QuerySet[Program]:
    programs = Program.objects.select_related("advertiser")
    if user_sees_all_advertisers(user=user):
        return programs
    return programs.filter(advertiser__in=advertiser_list(user=user))


def _in_programs(queryset: QuerySet, user: AbstractBaseUser, path: str = "program") -> QuerySet:
    if user_sees_all_advertisers(user=user):
        return queryset
    return queryset.filter(**{f"{path}__in": program_list(user=user)})


def tier_list(*, user: AbstractBaseUser) -> QuerySet[Tier]:
    return _in_programs(Tier.objects.select_related("program"), user)


def reward_list(*, user: AbstractBaseUser) -> QuerySet[Reward]:
    return _in_programs(Reward.objects.select_related("program", "min_tier"), user)


def promotion_list(*, user: AbstractBaseUser) -> QuerySet[Promotion]:
    return _in_programs(Promotion.objects.select_related("program"), user)


def member_list(*, user: AbstractBaseUser) -> QuerySet[Member]:
    return _in_programs(Member.objects.select_related("program", "tier"), user)


def ledger_list(*, user: AbstractBaseUser) -> QuerySet[LedgerEntry]:
    return _in_programs(LedgerEntry.objects.select_related("member", "reward"), user)


def tier_change_list(*, user: AbstractBaseUser) -> QuerySet[TierChange]:
    return _in_programs(TierChange.objects.select_related("member"), user, "member__program")


def api_key_list(*, user: AbstractBaseUser) -> QuerySet[ApiKey]:
    return _in_programs(ApiKey.objects.select_related("program"), user)


def program_tier_names(*, advertiser_id: int) -> list[str] | None:
    """The tier names campaigns of this advertiser may target; None without a program."""
    program = Program.objects.filter(advertiser_id=advertiser_id).first()
    if program is None:
        return None
    return list(program.tiers.order_by("qualifying_points").values_list("name", flat=True))


def tier_targeted_by(*, program: Program, tier_name: str) -> list[str]:
    """Names of the advertiser's campaigns (not completed or archived) targeting the tier."""
    campaigns = (Campaign.objects.filter(advertiser_id=program.advertiser_id)
                 .exclude(status__in=[Campaign.Status.COMPLETED, Campaign.Status.ARCHIVED])
                 .values_list("name", "loyalty_tiers"))
    return sorted(name for name, tiers in campaigns if tier_name in (tiers or []))


def program_ids_by_advertiser() -> dict[int, int]:
    """Advertiser id to its program's id, for the config snapshot."""
    return dict(Program.objects.values_list("advertiser_id", "id"))


def program_tiers(*, program: Program) -> list[Tier]:
    return list(program.tiers.order_by("qualifying_points"))


def promotion_multipliers(*, program: Program, channel: str,
                          now: datetime.datetime) -> list[Decimal]:
    """Multipliers of the promotions running at ``now`` for every channel or for ``channel``."""
    running = program.promotions.filter(starts_at__lte=now).filter(
        Q(ends_at__isnull=True) | Q(ends_at__gt=now))
    return list(running.filter(Q(channel="") | Q(channel=channel))
                .order_by("id").values_list("multiplier", flat=True))


def credits_since(*, member: Member, since: datetime.datetime) -> int:
    """Points added to the member's balance after ``since`` (earns and birthday rewards)."""
    total = member.ledger.filter(created_at__gt=since, points__gt=0).aggregate(
        total=Sum("points"))["total"]
    return int(total or 0)


def earned_between(*, member: Member, start: datetime.datetime,
                   end: datetime.datetime | None = None) -> int:
    """Points the member earned by purchases from ``start`` up to ``end`` (what qualifies)."""
    entries = member.ledger.filter(kind=LedgerEntry.Kind.EARN, created_at__gte=start)
    if end is not None:
        entries = entries.filter(created_at__lt=end)
    return int(entries.aggregate(total=Sum("points"))["total"] or 0)


def ledger_sum(*, member: Member) -> int:
    return int(member.ledger.aggregate(total=Sum("points"))["total"] or 0)


@dataclass(frozen=True)
class Balance:
    member: str
    program: int
    tier: str
    balance: int
    qualifying_points: int
    previous_qualifying_points: int
    qualifying_period_start: datetime.date
    tier_progress: Decimal
    next_tier: str | None
    points_to_next_tier: int | None
    effective_earn_rate: Decimal
    lifetime_points: int
    total_redemptions: int
    last_earn_at: datetime.datetime | None
    last_redeem_at: datetime.datetime | None


def member_balance(*, program: Program, user_id: str, now: datetime.datetime) -> Balance | None:
    member = Member.objects.select_related("tier").filter(program=program,
                                                          user_id=user_id).first()
    if member is None:
        return None
    tiers = program_tiers(program=program)
    upcoming = rules.next_tier(tiers, member.tier)
    threshold = upcoming.qualifying_points if upcoming is not None else None
    rate = rules.earn_rate(tier_multiplier=member.tier.earn_multiplier,
                           bonus_multipliers=promotion_multipliers(program=program, channel="",
                                                                   now=now))
    return Balance(
        member=member.user_id, program=program.pk, tier=member.tier.name,
        balance=member.balance, qualifying_points=member.qualifying_points,
        previous_qualifying_points=member.previous_qualifying_points,
        qualifying_period_start=member.qualifying_period_start,
        tier_progress=rules.tier_progress(points=member.qualifying_points,
                                          next_threshold=threshold),
        next_tier=upcoming.name if upcoming is not None else None,
        points_to_next_tier=(max(0, threshold - member.qualifying_points)
                             if threshold is not None else None),
        effective_earn_rate=rate, lifetime_points=member.lifetime_points,
        total_redemptions=member.total_redemptions, last_earn_at=member.last_earn_at,
        last_redeem_at=member.last_redeem_at)
