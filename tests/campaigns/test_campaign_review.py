from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from campaign_express.errors import DomainError
from campaigns import services
from campaigns.models import AuditEntry, Campaign, Creative

Status = Campaign.Status
REVIEWED = [Status.APPROVED, Status.ACTIVE, Status.PAUSED]


def campaign_entries(campaign: Campaign) -> list[tuple]:
    return list(AuditEntry.objects.filter(entity="campaign", entity_id=campaign.pk)
                .order_by("id").values_list("action", "actor__username", "from_status",
                                            "to_status", "note"))


def reviewed_campaign(make_campaign, approver, status):
    campaign = make_campaign(status, name="Morning Rush")
    Campaign.objects.filter(pk=campaign.pk).update(approved_by=approver,
                                                   submitted_by=campaign.created_by)
    campaign.refresh_from_db()
    return campaign


def change_budget(campaign, actor):
    services.campaign_update(campaign=campaign, actor=actor,
                             data={"total_budget": Decimal("2000.0000")})
    return "changed total_budget"


def change_targeting(campaign, actor):
    services.campaign_update(campaign=campaign, actor=actor,
                             data={"countries": ["USA", "CAN"], "device_types": ["phone"]})
    return "changed countries, device_types"


def add_creative(campaign, actor):
    services.creative_create(actor=actor, data={
        "campaign": campaign, "name": "Second banner", "format": "banner",
        "sizes": ["728x90"], "markup": "<div>ad</div>", "adomain": "shop.example"})
    return "added creative 'Second banner'"


def change_creative(campaign, actor):
    creative = campaign.creatives.get()
    services.creative_update(creative=creative, actor=actor, data={"sizes": ["320x50"]})
    return f"changed creative {creative.name!r}"


CHANGES = [change_budget, change_targeting, add_creative, change_creative]


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("status", REVIEWED)
def test_a_marketer_change_sends_a_reviewed_campaign_back_to_review(
        status, change, make_campaign, marketer, approver):
    campaign = reviewed_campaign(make_campaign, approver, status)

    reason = change(campaign, marketer)

    campaign.refresh_from_db()
    assert campaign.status == Status.IN_REVIEW
    assert (campaign.submitted_by, campaign.approved_by, campaign.approved_at) == (
        marketer, None, None)
    assert campaign_entries(campaign)[-1] == (
        "transition", "marketer-a", status, "in_review", f"Back to review: {reason}")


@pytest.mark.parametrize("status", REVIEWED)
def test_removing_a_creative_sends_a_reviewed_campaign_back_to_review(
        status, make_campaign, creative_factory, marketer, approver):
    campaign = reviewed_campaign(make_campaign, approver, status)
    extra = creative_factory(campaign=campaign, name="Spare banner",
                             approval_status=Creative.Approval.APPROVED)

    services.creative_delete(creative=extra, actor=marketer)

    campaign.refresh_from_db()
    assert campaign.status == Status.IN_REVIEW
    assert campaign_entries(campaign)[-1] == (
        "transition", "marketer-a", status, "in_review",
        "Back to review: removed creative 'Spare banner'")


def test_a_changed_creative_needs_a_new_review_too(make_campaign, marketer, approver):
    campaign = reviewed_campaign(make_campaign, approver, Status.ACTIVE)

    change_creative(campaign, marketer)

    creative = campaign.creatives.get()
    assert (creative.approval_status, creative.reviewed_by, creative.reviewed_at) == (
        Creative.Approval.PENDING, None, None)


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("status", REVIEWED)
def test_the_same_change_by_an_approver_keeps_the_status(
        status, change, make_campaign, approver, ops):
    campaign = reviewed_campaign(make_campaign, approver, status)

    change(campaign, ops)

    campaign.refresh_from_db()
    assert campaign.status == status
    assert campaign.approved_by == approver
    assert [entry for entry in campaign_entries(campaign) if entry[0] == "transition"] == []


@pytest.mark.parametrize("status", REVIEWED)
def test_a_name_change_keeps_the_status(status, make_campaign, marketer, approver):
    campaign = reviewed_campaign(make_campaign, approver, status)

    services.campaign_update(campaign=campaign, actor=marketer, data={"name": "Renamed"})

    campaign.refresh_from_db()
    assert (campaign.status, campaign.name, campaign.approved_by) == (status, "Renamed", approver)
    entry = AuditEntry.objects.get(entity="campaign", entity_id=campaign.pk)
    assert (entry.action, entry.changes) == ("update", {"name": ["Morning Rush", "Renamed"]})


def test_resaving_the_same_values_changes_nothing(make_campaign, marketer, approver):
    campaign = reviewed_campaign(make_campaign, approver, Status.ACTIVE)

    services.campaign_update(campaign=campaign, actor=marketer, data={
        "total_budget": Decimal("1000"), "daily_budget": Decimal("100.00"),
        "start_at": campaign.start_at.astimezone(ZoneInfo("America/New_York")),
        "countries": []})

    campaign.refresh_from_db()
    assert campaign.status == Status.ACTIVE
    assert campaign_entries(campaign) == []


def test_a_marketer_change_to_a_draft_keeps_it_a_draft(campaign, marketer):
    services.campaign_update(campaign=campaign, actor=marketer,
                             data={"total_budget": Decimal("5000.0000")})

    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT
    assert campaign_entries(campaign) == [
        ("update", "marketer-a", "", "", "")]
    assert AuditEntry.objects.get().changes == {"total_budget": ["1000.0000", "5000.0000"]}


@pytest.mark.parametrize("status", [Status.COMPLETED, Status.ARCHIVED])
def test_a_finished_campaign_cannot_be_changed(status, make_campaign, marketer):
    campaign = make_campaign(status, name="Summer Archive")

    with pytest.raises(DomainError) as raised:
        services.campaign_update(campaign=campaign, actor=marketer, data={"name": "Renamed"})

    assert (raised.value.status, raised.value.field, raised.value.code) == (
        409, "status", "not_editable")
    campaign.refresh_from_db()
    assert (campaign.status, campaign.name) == (status, "Summer Archive")
    assert campaign_entries(campaign) == []
