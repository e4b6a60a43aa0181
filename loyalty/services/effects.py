"""What follows a committed change to a member: the bidder's profile, analytics, metrics.

Services call `change_on_commit` inside their transaction; the work runs only once the change
committed, so a bidder never sees points that were rolled back. It reads the member again at
that moment, so of two changes committing close together the profile ends up with the later
state whichever callback runs last. None of it can fail the change: a store or bus that is
away is logged and counted, and the next change (or `member_profiles_sync`) writes the
profile again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

import msgspec
from django.conf import settings
from django.db import transaction

from analytics.emit import events_publish
from analytics.events import Event, EventType
from bidding.profiles import (
    PROFILE_UPDATED_SUBJECT,
    LoyaltyStatus,
    Profile,
    profile_update,
)
from campaign_express.backends.bus import Bus, BusTimeout, BusUnavailable
from campaign_express.backends.store import StoreUnavailable
from campaign_express.platform import bus_call, store_call
from loyalty import metrics
from loyalty.models import Member, Tier

logger = logging.getLogger(__name__)

# Published (core NATS, the user id as data) after a member's profile was written, so bidders
# holding the profile in their in-process cache can drop it and read the new one.


@dataclass(frozen=True)
class MemberChange:
    member_id: int
    events: tuple[Event, ...] = ()
    expired_points: int = 0


@dataclass(frozen=True)
class EventContext:
    """The fields every event of one member's change shares."""

    advertiser_id: int
    program_id: int
    user_id: str

    def event(self, event_type: EventType, *, reason: str, attributes: dict[str, str],
              price: Decimal = Decimal(0), currency: str = "") -> Event:
        return Event(event_type=event_type, node=settings.CONFIG.node_id,
                     advertiser_id=str(self.advertiser_id), user_id=self.user_id,
                     reason=reason, price_micros=int(price * 1_000_000), currency=currency,
                     attributes={"program": str(self.program_id), **attributes})


def change_on_commit(change: MemberChange) -> None:
    transaction.on_commit(lambda: change_publish(change), robust=True)


def change_publish(change: MemberChange) -> None:
    member = Member.objects.select_related("tier").filter(pk=change.member_id).first()
    if member is not None:
        profile_write(member=member)
    _count(change)
    events_publish(list(change.events))


def _count(change: MemberChange) -> None:
    for event in change.events:
        points = int(event.attributes.get("points", "0"))
        if event.event_type == EventType.LOYALTY_EARN:
            metrics.POINTS_EARNED.labels(kind=event.reason if event.reason == "birthday"
                                         else "earn").inc(points)
        elif event.event_type == EventType.LOYALTY_REDEEM:
            metrics.POINTS_REDEEMED.inc(points)
            metrics.REDEMPTIONS.inc()
        elif event.event_type == EventType.LOYALTY_TIER_CHANGE:
            metrics.TIER_CHANGES.labels(direction=event.reason).inc()
    if change.expired_points:
        metrics.POINTS_EXPIRED.inc(change.expired_points)


def loyalty_status(*, tier: Tier, balance: int) -> LoyaltyStatus:
    """The member's status as the profile schema has it; the boost as exact decimal text."""
    return LoyaltyStatus(tier=tier.name, balance=balance,
                         bid_boost=format(tier.bid_boost.normalize(), "f"))


def profile_write(*, member: Member) -> bool:
    """Put the member's tier and balance into `profile:{user_id}` under the program's id, and
    tell bidders; False (logged, counted) when the store could not be reached."""
    status = loyalty_status(tier=member.tier, balance=member.balance)
    key = str(member.program_id)

    def change(profile: Profile) -> Profile:
        return msgspec.structs.replace(profile, loyalty={**profile.loyalty, key: status})

    try:
        store_call(lambda store: profile_update(store, member.user_id, change))
    except StoreUnavailable as error:
        metrics.PROFILE_WRITE_FAILURES.inc()
        logger.warning("loyalty: profile of %s not written: %s", member.user_id, error)
        return False
    _notify(member.user_id)
    return True


def _notify(user_id: str) -> None:
    async def publish(bus: Bus) -> None:
        await bus.publish(PROFILE_UPDATED_SUBJECT, user_id.encode())

    try:
        bus_call(publish)
    except (BusUnavailable, BusTimeout) as error:
        logger.warning("loyalty: profile change of %s not announced: %s", user_id, error)


def member_profiles_sync(*, program_id: int | None = None, tier_id: int | None = None) -> int:
    """Write members' profiles again: all, a program's or a tier's (after a store lost its
    data, or a tier's bid boost changed); how many were written."""
    members = Member.objects.select_related("tier").order_by("pk")
    if program_id is not None:
        members = members.filter(program_id=program_id)
    if tier_id is not None:
        members = members.filter(tier_id=tier_id)
    return sum(profile_write(member=member) for member in members.iterator(chunk_size=500))
