"""Writes for programs, their tiers, promotions and rewards, and members' own details.

Marketers manage the programs of their advertisers (the admin and `/api/v1/loyalty/...`).
A program's id reaches the config snapshot (campaigns carry their advertiser's program), so
creating or deleting one requests a snapshot publish. Tier rules: the lowest tier starts at
0 points; a tier campaigns target keeps its name; a tier with members is not deleted. When
thresholds change, members move to the tier their points now earn (a task after commit).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.db.models import ProtectedError
from django.utils import timezone

from campaign_express.errors import DomainError, fields_assign
from campaign_express.tasks import enqueue_on_commit
from campaigns.models import Advertiser
from campaigns.selectors import user_sees_all_advertisers
from campaigns.snapshot import snapshot_request
from loyalty.models import Member, Program, Promotion, Reward, Tier
from loyalty.selectors import tier_targeted_by
from loyalty.services.points import lock_or_enroll

# The original design's tiers: name, qualifying points, earn multiplier, bid boost, birthday
# window (days), whether points expire.
DEFAULT_TIERS = (
    ("green", 0, Decimal("1.0"), Decimal("1.0"), 1, True),
    ("gold", 500, Decimal("1.2"), Decimal("1.15"), 7, False),
    ("reserve", 2500, Decimal("1.7"), Decimal("1.3"), 30, False),
)
EVALUATE_TASK = "loyalty.tasks.program_members_evaluate"
PROFILES_TASK = "loyalty.tasks.tier_profiles_sync"


def _require(actor: AbstractBaseUser | None, permission: str,
             advertiser: Advertiser | None = None) -> None:
    """``actor`` None is the system (the demo data, tasks)."""
    if actor is None:
        return
    if not actor.has_perm(permission):
        raise DomainError(f"You do not have the {permission!r} permission.", status=403,
                          code="permission_denied")
    if advertiser is not None and not user_sees_all_advertisers(user=actor) and (
            not advertiser.marketers.filter(pk=actor.pk).exists()):
        raise DomainError("You are not assigned to this advertiser.", field="advertiser",
                          status=403, code="permission_denied")


def _saved(instance: models.Model, data: Mapping[str, Any]) -> models.Model:
    fields_assign(instance, data)
    instance.full_clean()
    instance.save()
    return instance


# --- programs --------------------------------------------------------------------------------

@transaction.atomic
def program_create(*, actor: AbstractBaseUser | None, data: Mapping[str, Any],
                   with_default_tiers: bool = True) -> Program:
    """A program for an advertiser, with the default tiers unless told otherwise."""
    advertiser = data.get("advertiser")
    if not isinstance(advertiser, Advertiser):
        raise DomainError("Choose an advertiser.", field="advertiser")
    _require(actor, "loyalty.add_program", advertiser)
    if Program.objects.filter(advertiser=advertiser).exists():
        raise DomainError(f"{advertiser} has a loyalty program already.", field="advertiser",
                          status=409, code="program_exists")
    program = Program(currency=advertiser.currency)
    program = _saved(program, data)
    if with_default_tiers:
        program_default_tiers_create(program=program)
    snapshot_request()  # the advertiser's campaigns now carry the program's id
    return program


def program_default_tiers_create(*, program: Program) -> list[Tier]:
    """The original design's green, gold and reserve, for a program without tiers."""
    if program.tiers.exists():
        raise DomainError("The program has tiers already.", status=409, code="has_tiers")
    return [Tier.objects.create(program=program, name=name, qualifying_points=points,
                                earn_multiplier=multiplier, bid_boost=boost,
                                birthday_window_days=window, points_expire=expire)
            for name, points, multiplier, boost, window, expire in DEFAULT_TIERS]


@transaction.atomic
def program_update(*, program: Program, actor: AbstractBaseUser | None,
                   data: Mapping[str, Any]) -> Program:
    program = Program.objects.select_for_update().get(pk=program.pk)
    _require(actor, "loyalty.change_program", program.advertiser)
    if "advertiser" in data and data["advertiser"] != program.advertiser:
        raise DomainError("A program stays with its advertiser.", field="advertiser")
    return _saved(program, {name: value for name, value in data.items() if name != "advertiser"})


@transaction.atomic
def program_delete(*, program: Program, actor: AbstractBaseUser | None) -> None:
    _require(actor, "loyalty.delete_program", program.advertiser)
    if program.members.exists():
        raise DomainError("The program has members; deactivate it instead.", status=409,
                          code="program_has_members")
    targeting = sorted({name for tier in program.tiers.all()
                        for name in tier_targeted_by(program=program, tier_name=tier.name)})
    if targeting:
        raise DomainError(f"Campaigns target the program's tiers: {', '.join(targeting)}.",
                          status=409, code="tier_targeted")
    program.delete()
    snapshot_request()


# --- tiers -----------------------------------------------------------------------------------

def _check_tiers(program: Program) -> None:
    if not program.tiers.filter(qualifying_points=0).exists():
        raise DomainError("The lowest tier must start at 0 points.", field="qualifying_points")


def _tiers_changed(program: Program) -> None:
    _check_tiers(program)
    enqueue_on_commit(EVALUATE_TASK, program_id=program.pk)


@transaction.atomic
def tier_create(*, actor: AbstractBaseUser | None, data: Mapping[str, Any]) -> Tier:
    program = data.get("program")
    if not isinstance(program, Program):
        raise DomainError("Choose a program.", field="program")
    _require(actor, "loyalty.add_tier", program.advertiser)
    tier = _saved(Tier(), data)
    _tiers_changed(program)
    return tier


@transaction.atomic
def tier_update(*, tier: Tier, actor: AbstractBaseUser | None, data: Mapping[str, Any]) -> Tier:
    tier = Tier.objects.select_for_update().select_related("program").get(pk=tier.pk)
    program = tier.program
    _require(actor, "loyalty.change_tier", program.advertiser)
    if "program" in data and data["program"] != program:
        raise DomainError("A tier stays in its program.", field="program")
    if "name" in data and data["name"] != tier.name:
        targeting = tier_targeted_by(program=program, tier_name=tier.name)
        if targeting:
            raise DomainError(f"Campaigns target {tier.name!r}: {', '.join(targeting)}. Change "
                              "their targeting first.", field="name", status=409,
                              code="tier_targeted")
    boost = tier.bid_boost
    tier = _saved(tier, {name: value for name, value in data.items() if name != "program"})
    _tiers_changed(program)
    if tier.bid_boost != boost:
        # Members' profiles carry their tier's boost: the bidder must see the new one.
        enqueue_on_commit(PROFILES_TASK, tier_id=tier.pk)
    return tier


@transaction.atomic
def tier_delete(*, tier: Tier, actor: AbstractBaseUser | None) -> None:
    program = tier.program
    _require(actor, "loyalty.delete_tier", program.advertiser)
    targeting = tier_targeted_by(program=program, tier_name=tier.name)
    if targeting:
        raise DomainError(f"Campaigns target {tier.name!r}: {', '.join(targeting)}.",
                          status=409, code="tier_targeted")
    try:
        with transaction.atomic():
            tier.delete()
    except ProtectedError:
        raise DomainError(f"Members or rewards are in the {tier.name!r} tier; move them first.",
                          status=409, code="tier_in_use") from None
    _tiers_changed(program)


# --- rewards and promotions ------------------------------------------------------------------

def _program_of(data: Mapping[str, Any], instance: models.Model | None = None) -> Program:
    program = getattr(instance, "program", None) or data.get("program")
    if not isinstance(program, Program):
        raise DomainError("Choose a program.", field="program")
    if instance is not None and "program" in data and data["program"] != program:
        raise DomainError("It stays in its program.", field="program")
    return program


@transaction.atomic
def reward_save(*, actor: AbstractBaseUser | None, data: Mapping[str, Any],
                reward: Reward | None = None) -> Reward:
    """Create a reward, or change ``reward``."""
    program = _program_of(data, reward)
    _require(actor, f"loyalty.{'change' if reward else 'add'}_reward", program.advertiser)
    return _saved(reward or Reward(), data)


@transaction.atomic
def reward_delete(*, reward: Reward, actor: AbstractBaseUser | None) -> None:
    _require(actor, "loyalty.delete_reward", reward.program.advertiser)
    try:
        with transaction.atomic():
            reward.delete()
    except ProtectedError:
        raise DomainError("The reward has been redeemed; deactivate it instead.", status=409,
                          code="reward_redeemed") from None


@transaction.atomic
def promotion_save(*, actor: AbstractBaseUser | None, data: Mapping[str, Any],
                   promotion: Promotion | None = None) -> Promotion:
    program = _program_of(data, promotion)
    _require(actor, f"loyalty.{'change' if promotion else 'add'}_promotion", program.advertiser)
    return _saved(promotion or Promotion(), data)


@transaction.atomic
def promotion_delete(*, promotion: Promotion, actor: AbstractBaseUser | None) -> None:
    _require(actor, "loyalty.delete_promotion", promotion.program.advertiser)
    promotion.delete()


# --- members ---------------------------------------------------------------------------------

@transaction.atomic
def member_enroll(*, actor: AbstractBaseUser | None, program: Program, user_id: str,
                  birthday: datetime.date | None = None, preferred_channel: str = "",
                  now: datetime.datetime | None = None) -> Member:
    """Enrol a person (by the platform's user id) in the lowest tier, or refuse if they are a
    member already. Purchases enrol buyers by themselves (`points_earn`)."""
    _require(actor, "loyalty.add_member", program.advertiser)
    user_id = (user_id or "").strip()
    if not user_id:
        raise DomainError("This field is required.", field="user_id")
    if Member.objects.filter(program=program, user_id=user_id).exists():
        raise DomainError(f"{user_id!r} is a member already.", field="user_id", status=409,
                          code="already_a_member")
    tiers = list(program.tiers.order_by("qualifying_points"))
    member = lock_or_enroll(program, user_id, tiers, now or timezone.now())
    return member_update(member=member, actor=None, data={
        "birthday": birthday, "preferred_channel": preferred_channel})


@transaction.atomic
def member_update(*, member: Member, actor: AbstractBaseUser | None,
                  data: Mapping[str, Any]) -> Member:
    """A member's own details (birthday, preferred channel); points move only through the
    ledger."""
    member = Member.objects.select_for_update(of=("self",)).select_related(
        "program__advertiser", "tier").get(pk=member.pk)
    _require(actor, "loyalty.change_member", member.program.advertiser)
    allowed = {"birthday", "preferred_channel"}
    if set(data) - allowed:
        raise DomainError(f"Only {', '.join(sorted(allowed))} can be changed here.",
                          field=sorted(set(data) - allowed)[0])
    return _saved(member, data)
