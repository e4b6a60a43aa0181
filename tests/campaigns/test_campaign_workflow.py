import datetime

import pytest

from campaign_express.errors import DomainError
from campaigns import services
from campaigns.models import AuditEntry, Campaign, Creative

Status = Campaign.Status
UTC = datetime.UTC
START = datetime.datetime(2030, 3, 1, 9, 0, tzinfo=UTC)
END = datetime.datetime(2030, 4, 1, 9, 0, tzinfo=UTC)
DURING = datetime.datetime(2030, 3, 15, 12, 0, tzinfo=UTC)

ALLOWED = [(action, source) for action, transition in services.TRANSITIONS.items()
           for source in transition.sources]
REFUSED = [(action, status) for action, transition in services.TRANSITIONS.items()
           for status in Status.values if status not in transition.sources]


def transition_entries(campaign: Campaign) -> list[tuple]:
    return list(AuditEntry.objects.filter(entity="campaign", entity_id=campaign.pk,
                                          action=AuditEntry.Action.TRANSITION)
                .order_by("id").values_list("actor__username", "from_status", "to_status",
                                            "note"))


@pytest.mark.parametrize(("action", "source"), ALLOWED)
def test_every_allowed_transition_moves_the_campaign_and_writes_an_audit_entry(
        action, source, make_campaign, marketer, approver):
    campaign = make_campaign(source, start_at=START, end_at=END)
    actor = approver if action in ("approve", "reject") else marketer
    note = "Claims need substantiation" if action == "reject" else ""

    result = services.campaign_transition(campaign=campaign, actor=actor, action=action,
                                          note=note, now=DURING)

    target = services.TRANSITIONS[action].target
    campaign.refresh_from_db()
    assert result.status == target
    assert campaign.status == target
    assert transition_entries(campaign) == [(actor.username, source, target, note or action)]
    entry = AuditEntry.objects.get(entity="campaign", entity_id=campaign.pk)
    assert entry.advertiser_id == campaign.advertiser_id
    assert entry.campaign_id == campaign.pk
    assert entry.entity_name == campaign.name


def test_allowed_transitions_cover_the_whole_workflow():
    assert sorted(ALLOWED) == sorted([
        ("submit", "draft"), ("approve", "in_review"), ("reject", "in_review"),
        ("reopen", "rejected"), ("activate", "approved"), ("pause", "active"),
        ("resume", "paused"), ("complete", "approved"), ("complete", "active"),
        ("complete", "paused"), ("archive", "draft"), ("archive", "rejected"),
        ("archive", "completed"),
    ])


def test_submit_records_the_submitter(campaign, marketer):
    services.campaign_transition(campaign=campaign, actor=marketer, action="submit")

    campaign.refresh_from_db()
    assert campaign.submitted_by == marketer
    assert campaign.approved_by is None


def test_approve_records_the_approver_time_and_note(make_campaign, approver):
    campaign = make_campaign(Status.IN_REVIEW)

    services.campaign_transition(campaign=campaign, actor=approver, action="approve",
                                 note="Looks good", now=DURING)

    campaign.refresh_from_db()
    assert (campaign.approved_by, campaign.approved_at, campaign.review_note) == (
        approver, DURING, "Looks good")


def test_reject_keeps_the_note_for_the_marketer(make_campaign, approver):
    campaign = make_campaign(Status.IN_REVIEW)

    services.campaign_transition(campaign=campaign, actor=approver, action="reject",
                                 note="Claims need substantiation")

    campaign.refresh_from_db()
    assert (campaign.status, campaign.review_note, campaign.approved_by) == (
        Status.REJECTED, "Claims need substantiation", None)


@pytest.mark.parametrize(("action", "status"), REFUSED)
def test_a_transition_from_a_status_it_does_not_start_from_is_refused(
        action, status, make_campaign, ops):
    campaign = make_campaign(status, start_at=START, end_at=END)
    audit_count = AuditEntry.objects.count()

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=ops, action=action,
                                     note="Because", now=DURING)

    sources = ", ".join(services.TRANSITIONS[action].sources)
    assert (raised.value.status, raised.value.field, raised.value.code) == (
        409, "status", "invalid_transition")
    assert raised.value.message == (f"Cannot {action} a campaign that is "
                                    f"{Status(status).label.lower()}; allowed from {sources}.")
    campaign.refresh_from_db()
    assert campaign.status == status
    assert AuditEntry.objects.count() == audit_count


@pytest.mark.parametrize(("action", "status", "message"), [
    ("approve", "draft", "Cannot approve a campaign that is draft; allowed from in_review."),
    ("activate", "draft", "Cannot activate a campaign that is draft; allowed from approved."),
    ("resume", "active", "Cannot resume a campaign that is active; allowed from paused."),
    ("archive", "active",
     "Cannot archive a campaign that is active; allowed from draft, rejected, completed."),
])
def test_common_refused_transitions_say_why(action, status, message, make_campaign, ops):
    campaign = make_campaign(status)

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=ops, action=action)

    assert raised.value.message == message
    assert raised.value.as_dict() == {"status": [message]}
    campaign.refresh_from_db()
    assert campaign.status == status
    assert transition_entries(campaign) == []


def test_an_unknown_action_is_refused(campaign, marketer):
    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=marketer, action="launch")

    assert (raised.value.status, raised.value.field, raised.value.message) == (
        404, "action", "Unknown action 'launch'; one of submit, approve, reject, reopen, "
                       "activate, pause, resume, complete, archive.")
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT
    assert transition_entries(campaign) == []


@pytest.mark.parametrize("action", ["activate", "resume"])
def test_going_active_before_the_start_is_refused(action, make_campaign, marketer):
    source = Status.APPROVED if action == "activate" else Status.PAUSED
    campaign = make_campaign(source, start_at=START, end_at=END)

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=marketer, action=action,
                                     now=START - datetime.timedelta(minutes=1))

    assert (raised.value.status, raised.value.field, raised.value.code, raised.value.message) == (
        409, "start_at", "outside_schedule",
        "The campaign starts at 2030-03-01 09:00 UTC; it goes active by itself then.")
    campaign.refresh_from_db()
    assert campaign.status == source
    assert transition_entries(campaign) == []


@pytest.mark.parametrize("now", [END, END + datetime.timedelta(days=1)])
@pytest.mark.parametrize("action", ["activate", "resume"])
def test_going_active_after_the_end_is_refused(action, now, make_campaign, marketer):
    source = Status.APPROVED if action == "activate" else Status.PAUSED
    campaign = make_campaign(source, start_at=START, end_at=END)

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=marketer, action=action, now=now)

    assert (raised.value.status, raised.value.field, raised.value.message) == (
        409, "end_at", "The campaign ended at 2030-04-01 09:00 UTC.")
    campaign.refresh_from_db()
    assert campaign.status == source
    assert transition_entries(campaign) == []


@pytest.mark.parametrize("approval", [Creative.Approval.PENDING, Creative.Approval.REJECTED, None])
def test_activate_without_an_approved_creative_is_refused(
        approval, make_campaign, creative_factory, marketer):
    campaign = make_campaign(Status.APPROVED, approved_creative=False, start_at=START,
                             end_at=END)
    if approval is not None:
        creative_factory(campaign=campaign, approval_status=approval)

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=marketer, action="activate",
                                     now=DURING)

    assert (raised.value.status, raised.value.field, raised.value.code, raised.value.message) == (
        409, "creatives", "no_approved_creative",
        "The campaign needs at least one approved creative.")
    campaign.refresh_from_db()
    assert campaign.status == Status.APPROVED
    assert transition_entries(campaign) == []


def test_the_author_cannot_approve_their_own_campaign(campaign_factory, advertiser, ops):
    campaign = campaign_factory(advertiser=advertiser, created_by=ops, status=Status.IN_REVIEW)

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=ops, action="approve")

    assert (raised.value.status, raised.value.field, raised.value.code, raised.value.message) == (
        403, "approved_by", "approver_is_author",
        "The approver cannot be the campaign's author or submitter.")
    campaign.refresh_from_db()
    assert (campaign.status, campaign.approved_by) == (Status.IN_REVIEW, None)
    assert transition_entries(campaign) == []


def test_the_submitter_cannot_approve_what_they_submitted(campaign, approver):
    services.campaign_transition(campaign=campaign, actor=approver, action="submit")

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=approver, action="approve")

    assert (raised.value.status, raised.value.code) == (403, "approver_is_author")
    campaign.refresh_from_db()
    assert (campaign.status, campaign.approved_by) == (Status.IN_REVIEW, None)
    assert transition_entries(campaign) == [("approver-user", "draft", "in_review", "submit")]


@pytest.mark.parametrize("note", ["", "   \n"])
def test_reject_needs_a_note(note, make_campaign, approver):
    campaign = make_campaign(Status.IN_REVIEW)

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=approver, action="reject",
                                     note=note)

    assert (raised.value.status, raised.value.field, raised.value.message) == (
        400, "note", "Say why the campaign is rejected.")
    campaign.refresh_from_db()
    assert (campaign.status, campaign.review_note) == (Status.IN_REVIEW, "")
    assert transition_entries(campaign) == []


@pytest.mark.parametrize("action", ["approve", "reject"])
def test_a_marketer_cannot_review_a_campaign(action, make_campaign, other_marketer,
                                             advertiser):
    advertiser.marketers.add(other_marketer)
    campaign = make_campaign(Status.IN_REVIEW)

    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=other_marketer, action=action,
                                     note="No")

    assert (raised.value.status, raised.value.code, raised.value.message) == (
        403, "permission_denied",
        "You do not have the 'campaigns.approve_campaign' permission.")
    campaign.refresh_from_db()
    assert campaign.status == Status.IN_REVIEW
    assert transition_entries(campaign) == []


def test_a_marketer_of_another_advertiser_cannot_move_the_campaign(campaign, other_marketer):
    with pytest.raises(DomainError) as raised:
        services.campaign_transition(campaign=campaign, actor=other_marketer, action="submit")

    assert (raised.value.status, raised.value.field, raised.value.message) == (
        403, "advertiser", "You are not assigned to this advertiser.")
    campaign.refresh_from_db()
    assert campaign.status == Status.DRAFT
    assert transition_entries(campaign) == []


def test_advance_activates_an_approved_campaign_at_its_start(make_campaign):
    campaign = make_campaign(Status.APPROVED, start_at=START, end_at=END)

    before = services.campaigns_advance(now=START - datetime.timedelta(seconds=1))
    campaign.refresh_from_db()
    assert before == {"activated": 0, "completed": 0}
    assert campaign.status == Status.APPROVED

    counts = services.campaigns_advance(now=START)

    campaign.refresh_from_db()
    assert counts == {"activated": 1, "completed": 0}
    assert campaign.status == Status.ACTIVE
    assert transition_entries(campaign) == [(None, "approved", "active", "Scheduled start")]


def test_advance_leaves_an_approved_campaign_without_approved_creative_for_the_next_run(
        make_campaign):
    campaign = make_campaign(Status.APPROVED, approved_creative=False, start_at=START,
                             end_at=END)

    counts = services.campaigns_advance(now=DURING)

    campaign.refresh_from_db()
    assert counts == {"activated": 0, "completed": 0}
    assert campaign.status == Status.APPROVED
    assert transition_entries(campaign) == []


@pytest.mark.parametrize("status", [Status.ACTIVE, Status.PAUSED])
def test_advance_completes_a_campaign_at_its_end(status, make_campaign):
    campaign = make_campaign(status, start_at=START, end_at=END)

    assert services.campaigns_advance(now=END - datetime.timedelta(seconds=1)) == {
        "activated": 0, "completed": 0}
    counts = services.campaigns_advance(now=END)

    campaign.refresh_from_db()
    assert counts == {"activated": 0, "completed": 1}
    assert campaign.status == Status.COMPLETED
    assert transition_entries(campaign) == [(None, status, "completed", "Schedule ended")]


def test_advance_completes_a_campaign_that_spent_its_total_budget(make_campaign):
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    almost = make_campaign(Status.ACTIVE, start_at=START, end_at=END)
    Campaign.objects.filter(pk=campaign.pk).update(spent=campaign.total_budget)
    Campaign.objects.filter(pk=almost.pk).update(spent=almost.total_budget - 1)

    counts = services.campaigns_advance(now=DURING)

    campaign.refresh_from_db()
    almost.refresh_from_db()
    assert counts == {"activated": 0, "completed": 1}
    assert (campaign.status, almost.status) == (Status.COMPLETED, Status.ACTIVE)
    assert transition_entries(campaign) == [(None, "active", "completed", "Total budget spent")]
    assert transition_entries(almost) == []


def test_advance_completes_an_approved_campaign_whose_end_passed_before_it_ran(make_campaign):
    campaign = make_campaign(Status.APPROVED, approved_creative=False, start_at=START,
                             end_at=END)

    counts = services.campaigns_advance(now=END)

    campaign.refresh_from_db()
    assert counts == {"activated": 0, "completed": 1}
    assert campaign.status == Status.COMPLETED
    assert transition_entries(campaign) == [(None, "approved", "completed", "Schedule ended")]


def test_advance_does_not_complete_an_approved_campaign_for_its_budget(make_campaign):
    campaign = make_campaign(Status.APPROVED, start_at=START, end_at=END)
    Campaign.objects.filter(pk=campaign.pk).update(spent=campaign.total_budget)

    counts = services.campaigns_advance(now=START - datetime.timedelta(seconds=1))

    campaign.refresh_from_db()
    assert counts == {"activated": 0, "completed": 0}
    assert campaign.status == Status.APPROVED


def test_advance_is_idempotent(make_campaign):
    starting = make_campaign(Status.APPROVED, start_at=START, end_at=END)
    ending = make_campaign(Status.ACTIVE, start_at=START - datetime.timedelta(days=60),
                           end_at=DURING)
    spent = make_campaign(Status.PAUSED, start_at=START, end_at=END)
    Campaign.objects.filter(pk=spent.pk).update(spent=spent.total_budget + 1)

    first = services.campaigns_advance(now=DURING)
    audit_count = AuditEntry.objects.count()
    statuses = dict(Campaign.objects.values_list("pk", "status"))
    second = services.campaigns_advance(now=DURING)

    assert first == {"activated": 1, "completed": 2}
    assert statuses == {starting.pk: "active", ending.pk: "completed", spent.pk: "completed"}
    assert second == {"activated": 0, "completed": 0}
    assert dict(Campaign.objects.values_list("pk", "status")) == statuses
    assert AuditEntry.objects.count() == audit_count


def test_deleting_a_draft_records_what_was_deleted(campaign, marketer):
    campaign_id, creative = campaign.pk, campaign.creatives.create(
        name="Banner", format="banner", sizes=["300x250"], markup="<div>ad</div>",
        adomain="shop.example", created_by=marketer)

    services.campaign_delete(campaign=campaign, actor=marketer)

    assert not Campaign.objects.filter(pk=campaign_id).exists()
    assert not Creative.objects.filter(pk=creative.pk).exists()
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.entity_id, entry.entity_name, entry.from_status) == (
        "delete", marketer, campaign_id, "Morning Rush", "draft")
    assert {name: change for name, change in entry.changes.items()
            if name in ("name", "total_budget", "daily_budget", "advertiser_id")} == {
        "name": ["Morning Rush", None], "total_budget": ["1000.0000", None],
        "daily_budget": ["100.0000", None], "advertiser_id": [campaign.advertiser_id, None]}


@pytest.mark.parametrize("status", [Status.IN_REVIEW, Status.APPROVED, Status.ACTIVE,
                                    Status.PAUSED, Status.COMPLETED, Status.ARCHIVED])
def test_only_drafts_and_rejected_campaigns_can_be_deleted(status, make_campaign, marketer):
    campaign = make_campaign(status)

    with pytest.raises(DomainError) as raised:
        services.campaign_delete(campaign=campaign, actor=marketer)

    assert (raised.value.status, raised.value.field, raised.value.code) == (
        409, "status", "not_deletable")
    assert Campaign.objects.filter(pk=campaign.pk, status=status).exists()
    assert AuditEntry.objects.count() == 0
