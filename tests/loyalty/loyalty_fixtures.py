"""Shared pieces of the loyalty tests: users, programs with the original design's rewards, and
reading a user's profile as the bidder does."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import Group, User

from bidding.profiles import Profile, decode, profile_key
from campaign_express import platform
from campaigns.models import Advertiser
from loyalty import services
from loyalty.models import Program

REWARDS = [("customization", 25, "0.80", None), ("discount", 60, "2.00", None),
           ("basic_item", 100, "3.50", None), ("premium_item", 200, "6.50", None),
           ("premium_food", 300, "8.00", None), ("merchandise", 400, "15.00", None),
           ("exclusive_service", 500, "25.00", "gold")]


def make_user(username: str, role: str) -> User:
    user = User.objects.create_user(username, email=f"{username}@example.com",
                                    password="correct-horse-battery", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def make_program(advertiser: Advertiser, name: str = "Northwind Rewards") -> Program:
    program = services.program_create(actor=None, data={"advertiser": advertiser, "name": name})
    tiers = {tier.name: tier for tier in program.tiers.all()}
    for code, points, value, tier in REWARDS:
        services.reward_save(actor=None, data={
            "program": program, "code": code, "description": code.replace("_", " "),
            "points_cost": points, "value": Decimal(value),
            "min_tier": tiers[tier] if tier else None})
    return program


def profile_of(user_id: str) -> Profile | None:
    """The user's profile as the bidder reads it (from the process's store: embedded here)."""
    data = platform.store_call(lambda store: store.get(profile_key(user_id)))
    return decode(data) if data else None
