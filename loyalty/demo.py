"""Demo loyalty data: Northwind Coffee's program with the original design's tiers and seven
rewards, an app bonus, and three members earning and redeeming through the services (so their
ledgers, tiers and profiles are real). Idempotent: the program is created once, and earns and
redeems repeat by their transaction ids, which changes nothing.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from campaigns.models import Advertiser
from loyalty import services
from loyalty.models import Member, Program

ADVERTISER = "Northwind Coffee"
# code, description, points, value, minimum tier
REWARDS = [
    ("customization", "Free customization (extra shot, syrup or milk)", 25, "0.80", None),
    ("discount", "$2 off any order", 60, "2.00", None),
    ("basic_item", "A brewed coffee, hot tea or bakery item", 100, "3.50", None),
    ("premium_item", "A handcrafted drink or hot breakfast", 200, "6.50", None),
    ("premium_food", "A lunch sandwich, protein box or salad", 300, "8.00", None),
    ("merchandise", "Select merchandise or at-home coffee", 400, "15.00", None),
    ("exclusive_service", "A coffee tasting for two", 500, "25.00", "gold"),
]
# member (platform user id), spent (USD), birthday; `example-user-1` is the README's sample
# bid request's user, so that request bids as a gold member.
MEMBERS = [
    ("example-user-1", "600.00", None),
    ("demo-member-green", "120.00", datetime.date(1990, 6, 15)),
    ("demo-member-reserve", "2600.00", datetime.date(1985, 11, 2)),
]


def loyalty_demo_seed(*, actor: AbstractBaseUser | None) -> Program | None:
    advertiser = Advertiser.objects.filter(name=ADVERTISER).first()
    if advertiser is None:
        return None
    program = Program.objects.filter(advertiser=advertiser).first()
    if program is None:
        program = services.program_create(actor=actor, data={
            "advertiser": advertiser, "name": "Northwind Rewards", "currency": "USD"})
        tiers = {tier.name: tier for tier in program.tiers.all()}
        for code, description, points, value, tier in REWARDS:
            services.reward_save(actor=actor, data={
                "program": program, "code": code, "description": description,
                "points_cost": points, "value": Decimal(value),
                "min_tier": tiers[tier] if tier else None})
        services.promotion_save(actor=actor, data={
            "program": program, "name": "App bonus", "channel": "app",
            "multiplier": Decimal("1.5"), "starts_at": timezone.now()})
    for user_id, spent, birthday in MEMBERS:
        if not Member.objects.filter(program=program, user_id=user_id).exists():
            services.member_enroll(actor=actor, program=program, user_id=user_id,
                                   birthday=birthday, preferred_channel="in_store")
        services.points_earn(program=program, user_id=user_id, amount=Decimal(spent),
                             currency="USD", channel="in_store",
                             transaction_id=f"demo-{user_id}-1")
    services.points_redeem(program=program, user_id="demo-member-reserve",
                           reward_code="exclusive_service", channel="app",
                           idempotency_key="demo-demo-member-reserve-redeem-1")
    return program
