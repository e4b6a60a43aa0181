"""Loyalty tasks: thin, idempotent, by id."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from loyalty.services import effects, maintenance


@shared_task(name="loyalty.tasks.members_maintain", ignore_result=True)
def members_maintain() -> dict[str, int]:
    """The daily run: qualifying-period resets, tiers, expiry, birthday rewards."""
    if not settings.CONFIG.loyalty_enabled:
        return {}
    return maintenance.members_maintain()


@shared_task(name="loyalty.tasks.program_members_evaluate", ignore_result=True)
def program_members_evaluate(program_id: int) -> int:
    """After a program's tiers changed: members to the tier their points now earn."""
    return maintenance.program_members_evaluate(program_id=program_id)


@shared_task(name="loyalty.tasks.tier_profiles_sync", ignore_result=True)
def tier_profiles_sync(tier_id: int) -> int:
    """After a tier's bid boost changed: its members' profiles written again."""
    return effects.member_profiles_sync(tier_id=tier_id)
