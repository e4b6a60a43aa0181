import datetime
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from campaigns import services
from campaigns.models import Advertiser, AuditEntry, Campaign, Creative

Status = Campaign.Status
START = datetime.datetime(2030, 3, 1, 9, 0, tzinfo=datetime.UTC)
END = datetime.datetime(2030, 4, 1, 9, 0, tzinfo=datetime.UTC)
CAMPAIGNS = "/admin/campaigns/campaign/"
MODELS = ["advertiser", "campaign", "creative", "auditentry"]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[tuple[str, str]]:
    return [(message.level_tag, message.message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def admin_objects(make_campaign, marketer):
    """One of each object for advertiser A, with an audit entry from a real change."""
    campaign = make_campaign(Status.DRAFT, name="Morning Rush", start_at=START, end_at=END)
    services.campaign_update(campaign=campaign, actor=marketer, data={"name": "Morning Rush 2"})
    return {"advertiser": campaign.advertiser, "campaign": campaign,
            "creative": campaign.creatives.get(), "auditentry": AuditEntry.objects.get()}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("role", ["ops", "marketer"])
def test_changelists_and_change_pages_render(role, model, request, admin_objects):
    client = logged_in(request.getfixturevalue(role))
    obj = admin_objects[model]

    changelist = client.get(f"/admin/campaigns/{model}/")
    change = client.get(f"/admin/campaigns/{model}/{obj.pk}/change/")

    assert changelist.status_code == 200
    assert list(changelist.context["cl"].result_list) == [obj]
    assert change.status_code == 200
    assert change.context["original"] == obj


@pytest.mark.parametrize(("role", "model", "status_code"), [
    ("ops", "advertiser", 200), ("ops", "campaign", 200), ("ops", "creative", 200),
    ("marketer", "campaign", 200), ("marketer", "creative", 200),
    # Marketers do not create advertisers; nobody writes the audit log by hand.
    ("marketer", "advertiser", 403), ("ops", "auditentry", 403), ("marketer", "auditentry", 403),
])
def test_add_pages_render_for_who_may_add(role, model, status_code, request, admin_objects):
    response = logged_in(request.getfixturevalue(role)).get(f"/admin/campaigns/{model}/add/")

    assert response.status_code == status_code


def test_a_marketer_sees_the_advertiser_read_only(marketer, admin_objects):
    response = logged_in(marketer).get(
        f"/admin/campaigns/advertiser/{admin_objects['advertiser'].pk}/change/")

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False


@pytest.mark.parametrize("path", ["/admin/", CAMPAIGNS, "/admin/campaigns/creative/1/change/"])
def test_anonymous_users_are_sent_to_the_login_page(path, db):
    response = Client().get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"


# --- isolation -------------------------------------------------------------------------------

@pytest.fixture
def two_advertisers(campaign, other_campaign, creative_factory, marketer, other_marketer):
    services.campaign_update(campaign=campaign, actor=marketer, data={"name": "Evening Rush"})
    services.campaign_update(campaign=other_campaign, actor=other_marketer,
                             data={"daily_budget": Decimal("50")})
    return {
        "advertiser": (campaign.advertiser, other_campaign.advertiser),
        "campaign": (campaign, other_campaign),
        "creative": (creative_factory(campaign=campaign),
                     creative_factory(campaign=other_campaign)),
        "auditentry": (AuditEntry.objects.get(campaign_id=campaign.pk),
                       AuditEntry.objects.get(campaign_id=other_campaign.pk)),
    }


@pytest.mark.parametrize("model", MODELS)
def test_a_marketer_sees_only_their_advertisers_objects_in_the_admin(model, marketer,
                                                                     two_advertisers):
    own, other = two_advertisers[model]
    client = logged_in(marketer)

    changelist = client.get(f"/admin/campaigns/{model}/")
    other_page = client.get(f"/admin/campaigns/{model}/{other.pk}/change/")

    assert list(changelist.context["cl"].result_list) == [own]
    assert other_page.status_code == 302
    assert other_page["Location"] == "/admin/"


@pytest.mark.parametrize("model", ["campaign", "creative"])
def test_a_marketers_list_filters_never_name_another_advertiser(model, marketer,
                                                                two_advertisers):
    own, other = two_advertisers["advertiser"]

    page = logged_in(marketer).get(f"/admin/campaigns/{model}/").content.decode()

    assert own.name in page if model == "campaign" else True  # the advertiser column
    assert other.name not in page


@pytest.mark.parametrize("role", ["approver", "ops"])
def test_approvers_and_ops_see_every_campaign_in_the_admin(role, request, two_advertisers):
    own, other = two_advertisers["campaign"]

    response = logged_in(request.getfixturevalue(role)).get(CAMPAIGNS)

    assert list(response.context["cl"].result_list) == [other, own]


def test_a_marketer_cannot_change_another_advertisers_campaign_in_the_admin(
        marketer, two_advertisers):
    _, other = two_advertisers["campaign"]

    response = logged_in(marketer).post(f"{CAMPAIGNS}{other.pk}/change/", {"name": "Hijacked"})

    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert Campaign.objects.get(pk=other.pk).name == "Weekend Getaways"


def test_the_add_form_offers_only_the_marketers_advertisers(marketer, advertiser,
                                                            other_advertiser):
    response = logged_in(marketer).get(f"{CAMPAIGNS}add/")

    assert list(response.context["adminform"].form.fields["advertiser"].queryset) == [
        advertiser]


def test_a_marketer_cannot_add_a_campaign_for_another_advertiser_in_the_admin(
        marketer, advertiser, other_advertiser, admin_form_data):
    client = logged_in(marketer)
    data = admin_form_data(client.get(f"{CAMPAIGNS}add/"))
    data.update(advertiser=other_advertiser.pk, name="Sneaky", start_at_0="2030-03-01",
                start_at_1="09:00", end_at_0="2030-04-01", end_at_1="09:00",
                total_budget="1000", daily_budget="100", base_bid_cpm="1", max_bid_cpm="2")

    response = client.post(f"{CAMPAIGNS}add/", data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"advertiser": [
        "Select a valid choice. That choice is not one of the available choices."]}
    assert Campaign.objects.count() == 0


# --- forms -----------------------------------------------------------------------------------

def test_the_add_form_creates_a_campaign_through_the_service(marketer, advertiser,
                                                             admin_form_data):
    client = logged_in(marketer)
    data = admin_form_data(client.get(f"{CAMPAIGNS}add/"))
    data.update(advertiser=advertiser.pk, name="Spring Sale", start_at_0="2030-03-01",
                start_at_1="09:00", end_at_0="2030-04-01", end_at_1="09:00",
                total_budget="1000", daily_budget="100", base_bid_cpm="1", max_bid_cpm="2",
                countries="usa, can", device_types=["phone", "tablet"],
                dayparts="mon-fri 9-11")

    response = client.post(f"{CAMPAIGNS}add/", data)

    assert response.status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.name, campaign.status, campaign.created_by, campaign.start_at,
            campaign.countries, campaign.device_types) == (
        "Spring Sale", "draft", marketer, START, ["USA", "CAN"], ["phone", "tablet"])
    assert campaign.dayparts == {day: [9, 10] for day in ("mon", "tue", "wed", "thu", "fri")}
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor, entry.campaign_id) == ("create", marketer, campaign.pk)


def test_the_change_form_shows_a_validation_error_on_the_field(marketer, make_campaign,
                                                              admin_form_data):
    campaign = make_campaign(Status.DRAFT, start_at=START, end_at=END)
    client = logged_in(marketer)
    data = admin_form_data(client.get(f"{CAMPAIGNS}{campaign.pk}/change/"))
    data["daily_budget"] = "1000.5"

    response = client.post(f"{CAMPAIGNS}{campaign.pk}/change/", data)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "daily_budget": ["The daily budget cannot exceed the total budget."]}
    assert b"The daily budget cannot exceed the total budget." in response.content
    assert Campaign.objects.get(pk=campaign.pk).daily_budget == Decimal("100.0000")
    assert AuditEntry.objects.count() == 0


def test_the_change_form_saves_through_the_service(marketer, make_campaign, admin_form_data):
    campaign = make_campaign(Status.ACTIVE, name="Morning Rush", start_at=START, end_at=END)
    client = logged_in(marketer)
    data = admin_form_data(client.get(f"{CAMPAIGNS}{campaign.pk}/change/"))
    data["daily_budget"] = "120"

    response = client.post(f"{CAMPAIGNS}{campaign.pk}/change/", data)

    assert response.status_code == 302
    campaign.refresh_from_db()
    assert (campaign.daily_budget, campaign.status) == (Decimal("120.0000"), "in_review")
    assert list(AuditEntry.objects.order_by("id").values_list("action", "changes", "note")) == [
        ("update", {"daily_budget": ["100.0000", "120"]}, ""),
        ("transition", {}, "Back to review: changed daily_budget")]


def test_an_unchanged_change_form_writes_nothing(marketer, make_campaign, admin_form_data):
    campaign = make_campaign(Status.ACTIVE, start_at=START, end_at=END,
                             countries=["USA"], device_types=["phone"])
    client = logged_in(marketer)
    data = admin_form_data(client.get(f"{CAMPAIGNS}{campaign.pk}/change/"))

    response = client.post(f"{CAMPAIGNS}{campaign.pk}/change/", data)

    assert response.status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "active"
    assert AuditEntry.objects.count() == 0


def test_an_inline_creative_is_added_through_the_service(marketer, make_campaign,
                                                         admin_form_data):
    campaign = make_campaign(Status.DRAFT, start_at=START, end_at=END)
    client = logged_in(marketer)
    data = admin_form_data(client.get(f"{CAMPAIGNS}{campaign.pk}/change/"))
    data.update({"creatives-TOTAL_FORMS": "2", "creatives-1-name": "Leaderboard",
                 "creatives-1-format": "banner", "creatives-1-sizes": "728x90",
                 "creatives-1-markup": "<div>ad</div>",
                 "creatives-1-adomain": "shop.example"})

    response = client.post(f"{CAMPAIGNS}{campaign.pk}/change/", data)

    assert response.status_code == 302
    creative = campaign.creatives.get(name="Leaderboard")
    assert (creative.sizes, creative.created_by, creative.approval_status) == (
        ["728x90"], marketer, "pending")
    assert AuditEntry.objects.get().entity == "creative"


def test_finished_campaigns_are_read_only_in_the_admin(marketer, make_campaign):
    campaign = make_campaign(Status.COMPLETED)

    response = logged_in(marketer).get(f"{CAMPAIGNS}{campaign.pk}/change/")

    assert response.status_code == 200
    assert response.context["has_change_permission"] is False


def test_the_change_page_shows_the_audit_history(marketer, approver, make_campaign):
    campaign = make_campaign(Status.DRAFT, start_at=START, end_at=END)
    services.campaign_transition(campaign=campaign, actor=marketer, action="submit")
    services.campaign_transition(campaign=campaign, actor=approver, action="reject",
                                 note="Too loud")

    response = logged_in(marketer).get(f"{CAMPAIGNS}{campaign.pk}/change/")

    content = response.content.decode()
    assert "<th>When</th><th>Who</th><th>What</th><th>Status</th><th>Changes</th>" in content
    assert "<td>approver-user</td><td>transition campaign</td><td>in_review → rejected</td>" \
           "<td>Too loud</td>" in content
    assert "<td>marketer-a</td><td>transition campaign</td><td>draft → in_review</td>" \
           "<td>submit</td>" in content


# --- actions ---------------------------------------------------------------------------------

def test_the_submit_action_submits_the_selected_campaigns(marketer, make_campaign):
    first, second = make_campaign(Status.DRAFT), make_campaign(Status.DRAFT)

    response = logged_in(marketer).post(CAMPAIGNS, {
        "action": "submit_campaigns", "_selected_action": [first.pk, second.pk]})

    assert response.status_code == 302
    assert messages_of(response) == [("success", "Submitted 2 campaigns.")]
    assert sorted(Campaign.objects.values_list("status", flat=True)) == ["in_review"] * 2
    assert AuditEntry.objects.filter(action="transition", actor=marketer).count() == 2


def test_the_approve_action_approves_and_reports_refusals(approver, make_campaign):
    in_review, draft = make_campaign(Status.IN_REVIEW), make_campaign(Status.DRAFT)

    response = logged_in(approver).post(CAMPAIGNS, {
        "action": "approve_campaigns", "_selected_action": [in_review.pk, draft.pk]})

    assert response.status_code == 302
    assert sorted(messages_of(response)) == sorted([
        ("success", "Approved 1 campaign."),
        ("error", f"{draft.name}: Cannot approve a campaign that is draft; allowed from "
                  "in_review.")])
    in_review.refresh_from_db()
    draft.refresh_from_db()
    assert (in_review.status, in_review.approved_by, draft.status) == ("approved", approver,
                                                                       "draft")


def test_a_marketer_cannot_approve_with_the_admin_action(marketer, make_campaign):
    campaign = make_campaign(Status.IN_REVIEW)

    response = logged_in(marketer).post(CAMPAIGNS, {
        "action": "approve_campaigns", "_selected_action": [campaign.pk]})

    assert response.status_code == 302
    assert messages_of(response) == [
        ("error", f"{campaign.name}: You do not have the 'campaigns.approve_campaign' "
                  "permission.")]
    campaign.refresh_from_db()
    assert campaign.status == "in_review"


def test_the_reject_action_asks_for_a_note_then_rejects(approver, make_campaign):
    campaign = make_campaign(Status.IN_REVIEW)
    client = logged_in(approver)

    note_page = client.post(CAMPAIGNS, {"action": "reject_campaigns",
                                        "_selected_action": [campaign.pk]})
    status_after_note_page = Campaign.objects.get(pk=campaign.pk).status
    rejected = client.post(CAMPAIGNS, {"action": "reject_campaigns",
                                       "_selected_action": [campaign.pk],
                                       "note": "Claims need substantiation"})

    assert note_page.status_code == 200
    assert [template.name for template in note_page.templates][0] == (
        "admin/campaigns/reject.html")
    assert list(note_page.context["campaigns"]) == [campaign]
    assert status_after_note_page == "in_review"
    assert rejected.status_code == 302
    assert messages_of(rejected) == [("success", "Rejected 1 campaign.")]
    campaign.refresh_from_db()
    assert (campaign.status, campaign.review_note) == ("rejected", "Claims need substantiation")
    assert AuditEntry.objects.get().note == "Claims need substantiation"


def test_the_reject_action_with_a_blank_note_shows_the_note_page_again(approver,
                                                                      make_campaign):
    campaign = make_campaign(Status.IN_REVIEW)

    response = logged_in(approver).post(CAMPAIGNS, {
        "action": "reject_campaigns", "_selected_action": [campaign.pk], "note": "  "})

    assert response.status_code == 200
    assert response.context["form"].errors == {"note": ["This field is required."]}
    campaign.refresh_from_db()
    assert campaign.status == "in_review"
    assert AuditEntry.objects.count() == 0


def test_the_creative_approve_action_approves(approver, creative_factory, campaign):
    creative = creative_factory(campaign=campaign)

    response = logged_in(approver).post("/admin/campaigns/creative/", {
        "action": "approve_creatives", "_selected_action": [creative.pk]})

    assert response.status_code == 302
    assert messages_of(response) == [("success", "Approved 1 creative.")]
    creative.refresh_from_db()
    assert (creative.approval_status, creative.reviewed_by) == (Creative.Approval.APPROVED,
                                                                approver)


def test_ops_adds_an_advertiser_with_its_marketers(ops, marketer, admin_form_data):
    client = logged_in(ops)
    data = admin_form_data(client.get("/admin/campaigns/advertiser/add/"))
    data.update(name="Fabrikam", domain="Fabrikam.Example", marketers=[str(marketer.pk)])

    response = client.post("/admin/campaigns/advertiser/add/", data)

    assert response.status_code == 302
    advertiser = Advertiser.objects.get(name="Fabrikam")
    assert (advertiser.domain, list(advertiser.marketers.all())) == ("fabrikam.example",
                                                                     [marketer])
    assert list(AuditEntry.objects.order_by("id").values_list("action", "actor__username")) == [
        ("create", "ops-user"), ("update", "ops-user")]
    assert AuditEntry.objects.order_by("id").last().changes == {
        "marketers": [[], ["marketer-a"]]}


def test_a_marketer_adds_an_uploaded_creative_in_the_admin(marketer, make_campaign,
                                                           admin_form_data, png_upload):
    campaign = make_campaign(Status.APPROVED, name="Morning Rush")
    client = logged_in(marketer)
    data = admin_form_data(client.get("/admin/campaigns/creative/add/"))
    data.update(campaign=campaign.pk, name="Leaderboard", format="banner", sizes="728x90",
                adomain="shop.example", asset=png_upload("leaderboard.png"))

    response = client.post("/admin/campaigns/creative/add/", data)

    assert response.status_code == 302
    creative = Creative.objects.get(name="Leaderboard")
    assert (creative.created_by, creative.markup, creative.asset.name.endswith(".png")) == (
        marketer, "", True)
    campaign.refresh_from_db()
    assert campaign.status == "in_review"
    assert AuditEntry.objects.get(action="transition").note == (
        "Back to review: added creative 'Leaderboard'")


def test_a_bulk_delete_goes_through_the_service_one_campaign_at_a_time(marketer,
                                                                       make_campaign):
    draft = make_campaign(Status.DRAFT, start_at=START, end_at=END)
    active = make_campaign(Status.ACTIVE, start_at=START, end_at=END)

    logged_in(marketer).post(CAMPAIGNS, {
        "action": "delete_selected", "_selected_action": [draft.pk], "post": "yes"})

    assert not Campaign.objects.filter(pk=draft.pk).exists()
    assert AuditEntry.objects.filter(entity="campaign", entity_id=draft.pk,
                                     action=AuditEntry.Action.DELETE).count() == 1
    assert Campaign.objects.filter(pk=active.pk).exists()
