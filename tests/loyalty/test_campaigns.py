"""Loyalty where campaigns meet it: tier targeting names the advertiser's tiers, the config
snapshot carries the program, and the demo data."""

import datetime
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from campaign_express.errors import DomainError
from campaigns import services as campaign_services
from campaigns.demo import demo_seed
from campaigns.models import Campaign, Creative, SnapshotOutbox
from campaigns.snapshot import snapshot_compile
from loyalty import services
from loyalty.models import LedgerEntry, Member, Program, Reward
from tests.loyalty.loyalty_fixtures import make_program

pytestmark = pytest.mark.django_db


def campaign_data(advertiser, **fields):
    now = timezone.now()
    return {"advertiser": advertiser, "name": "Morning Rush",
            "start_at": now - datetime.timedelta(days=1),
            "end_at": now + datetime.timedelta(days=30), "total_budget": Decimal(1000),
            "daily_budget": Decimal(100), "base_bid_cpm": Decimal("2.50"),
            "max_bid_cpm": Decimal(5), **fields}


def test_a_campaign_targets_only_tiers_of_its_advertiser_s_program(marketer, advertiser,
                                                                   program):
    campaign = campaign_services.campaign_create(actor=marketer, data=campaign_data(
        advertiser, loyalty_tiers=["gold", "reserve"]))

    with pytest.raises(ValidationError) as refused:
        campaign_services.campaign_create(actor=marketer, data=campaign_data(
            advertiser, name="Platinum", loyalty_tiers=["gold", "platinum"]))

    assert campaign.loyalty_tiers == ["gold", "reserve"]
    assert refused.value.message_dict == {"loyalty_tiers": [
        "Not a tier of the advertiser's loyalty program: platinum (its tiers: green, gold, "
        "reserve)."]}


def test_without_a_program_there_is_no_tier_to_target(marketer, advertiser):
    with pytest.raises(ValidationError) as refused:
        campaign_services.campaign_create(actor=marketer, data=campaign_data(
            advertiser, loyalty_tiers=["gold"]))

    assert refused.value.message_dict == {"loyalty_tiers": [
        "The advertiser has no loyalty program, so there are no tiers to target."]}


def test_a_targeted_tier_keeps_its_name_and_is_not_deleted(marketer, advertiser, program):
    campaign_services.campaign_create(actor=marketer, data=campaign_data(
        advertiser, loyalty_tiers=["gold"]))
    gold = program.tiers.get(name="gold")

    with pytest.raises(DomainError) as renamed:
        services.tier_update(tier=gold, actor=marketer, data={"name": "golden"})
    with pytest.raises(DomainError) as deleted:
        services.tier_delete(tier=gold, actor=marketer)

    assert (renamed.value.code, deleted.value.code) == ("tier_targeted", "tier_targeted")
    assert renamed.value.message == ("Campaigns target 'gold': Morning Rush. Change their "
                                     "targeting first.")
    assert program.tiers.filter(name="gold").exists()


def test_the_snapshot_carries_each_campaign_s_program(marketer, advertiser, other_advertiser,
                                                      program, other_marketer):
    ours = Campaign.objects.create(**campaign_data(advertiser), created_by=marketer,
                                   status=Campaign.Status.ACTIVE, loyalty_tiers=["gold"])
    theirs = Campaign.objects.create(**campaign_data(other_advertiser, name="Stays"),
                                     created_by=other_marketer, status=Campaign.Status.ACTIVE)
    for campaign in (ours, theirs):
        Creative.objects.create(campaign=campaign, name="Banner", format="banner",
                                sizes=["300x250"], markup="<a>Shop</a>", adomain="shop.example",
                                created_by=campaign.created_by,
                                approval_status=Creative.Approval.APPROVED)

    snapshot = snapshot_compile(version=1)

    assert {entry.name: (entry.loyalty_program_id, entry.loyalty_tiers)
            for entry in snapshot.campaigns} == {"Morning Rush": (program.pk, ("gold",)),
                                                 "Stays": (None, ())}


def test_creating_a_program_requests_a_snapshot_publish(other_advertiser):
    before = SnapshotOutbox.objects.count()

    make_program(other_advertiser)

    assert SnapshotOutbox.objects.count() == before + 1


def test_the_demo_has_a_program_with_rewards_and_members_and_is_idempotent(db):
    demo_seed()
    ledger = LedgerEntry.objects.count()
    demo_seed()

    program = Program.objects.get(advertiser__name="Northwind Coffee")
    assert LedgerEntry.objects.count() == ledger
    assert list(program.tiers.values_list("name", flat=True)) == ["green", "gold", "reserve"]
    assert list(Reward.objects.filter(program=program).values_list("code", "points_cost")) == [
        ("customization", 25), ("discount", 60), ("basic_item", 100), ("premium_item", 200),
        ("premium_food", 300), ("merchandise", 400), ("exclusive_service", 500)]
    assert {member.user_id: (member.tier.name, member.balance)
            for member in Member.objects.filter(program=program)} == {
        "example-user-1": ("gold", 600), "demo-member-green": ("green", 120),
        "demo-member-reserve": ("reserve", 2100)}
    assert Campaign.objects.get(name="Morning Rush").loyalty_tiers == ["gold", "reserve"]
