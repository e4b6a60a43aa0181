import datetime

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from campaigns.models import Advertiser, AuditEntry, Campaign, Creative

Status = Campaign.Status
START = datetime.datetime(2030, 3, 1, 9, 0, tzinfo=datetime.UTC)
END = datetime.datetime(2030, 4, 1, 9, 0, tzinfo=datetime.UTC)
NOT_AUTHENTICATED = {"detail": "Authentication credentials were not provided."}
NOT_PERMITTED = {"detail": "You do not have permission to perform this action."}


def ids(response) -> list[int]:
    return [item["id"] for item in response.json()["results"]]


def campaign_payload(advertiser, **overrides) -> dict:
    return {"advertiser": advertiser.pk, "name": "Spring Sale", "start_at": START.isoformat(),
            "end_at": END.isoformat(), "total_budget": "1000", "daily_budget": "100",
            "base_bid_cpm": "2.5", "max_bid_cpm": "5", **overrides}


# --- authentication --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/advertisers/", "/api/v1/campaigns/",
                                  "/api/v1/creatives/"])
def test_anonymous_requests_are_unauthorized(path, campaign):
    response = APIClient().get(path)

    assert response.status_code == 401
    assert response.json() == NOT_AUTHENTICATED
    assert response["WWW-Authenticate"] == "Token"


def test_anonymous_cannot_create_a_campaign(advertiser):
    response = APIClient().post("/api/v1/campaigns/", campaign_payload(advertiser),
                                format="json")

    assert response.status_code == 401
    assert Campaign.objects.count() == 0


def test_a_token_from_the_token_endpoint_authenticates(marketer, campaign, other_campaign):
    client = APIClient()

    token = client.post("/api/v1/auth/token/", {"username": "marketer-a",
                                                "password": "correct-horse-battery"})
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.json()['token']}")
    response = client.get("/api/v1/campaigns/")

    assert token.status_code == 200
    assert token.json() == {"token": marketer.auth_token.key}
    assert response.status_code == 200
    assert ids(response) == [campaign.pk]


def test_the_token_endpoint_refuses_a_wrong_password(marketer):
    response = APIClient().post("/api/v1/auth/token/", {"username": "marketer-a",
                                                        "password": "wrong"})

    assert response.status_code == 400
    assert response.json() == {
        "non_field_errors": ["Unable to log in with provided credentials."]}
    assert not Token.objects.filter(user=marketer).exists()


def test_an_unknown_token_is_refused(marketer):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get("/api/v1/campaigns/")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token."}


# --- advertiser isolation --------------------------------------------------------------------

def test_a_marketer_lists_only_their_advertisers_campaigns(marketer_api, campaign,
                                                           other_campaign):
    response = marketer_api.get("/api/v1/campaigns/")

    assert response.status_code == 200
    assert ids(response) == [campaign.pk]
    assert response.json()["count"] == 1


@pytest.mark.parametrize("client", ["approver_api", "ops_api"])
def test_approvers_and_ops_see_every_campaign(client, request, campaign, other_campaign):
    response = request.getfixturevalue(client).get("/api/v1/campaigns/")

    assert response.status_code == 200
    assert ids(response) == [other_campaign.pk, campaign.pk]


def test_a_marketer_lists_only_their_advertisers(marketer_api, advertiser, other_advertiser):
    response = marketer_api.get("/api/v1/advertisers/")

    assert ids(response) == [advertiser.pk]
    assert response.json()["results"][0]["marketers"] == ["marketer-a"]


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("get", "", None), ("patch", "", {"name": "Hijacked"}),
    ("put", "", None), ("delete", "", None), ("get", "history/", None),
    ("post", "submit/", {}), ("post", "archive/", {}),
])
def test_another_advertisers_campaign_is_not_found(method, suffix, body, marketer_api,
                                                   other_campaign):
    path = f"/api/v1/campaigns/{other_campaign.pk}/{suffix}"

    response = getattr(marketer_api, method)(path, body, format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "No Campaign matches the given query."}
    stored = Campaign.objects.get(pk=other_campaign.pk)
    assert (stored.name, stored.status) == ("Weekend Getaways", "draft")
    assert AuditEntry.objects.count() == 0


def test_a_marketer_cannot_create_a_campaign_for_another_advertiser(marketer_api,
                                                                    other_advertiser):
    response = marketer_api.post("/api/v1/campaigns/", campaign_payload(other_advertiser),
                                 format="json")

    assert response.status_code == 400
    assert response.json() == {
        "advertiser": [f'Invalid pk "{other_advertiser.pk}" - object does not exist.']}
    assert Campaign.objects.count() == 0
    assert AuditEntry.objects.count() == 0


def test_a_marketer_cannot_move_a_campaign_to_another_advertiser(marketer_api, campaign,
                                                                 other_advertiser):
    response = marketer_api.patch(f"/api/v1/campaigns/{campaign.pk}/",
                                  {"advertiser": other_advertiser.pk}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "advertiser": [f'Invalid pk "{other_advertiser.pk}" - object does not exist.']}
    assert Campaign.objects.get(pk=campaign.pk).advertiser_id == campaign.advertiser_id


def test_a_marketer_lists_only_their_advertisers_creatives(
        marketer_api, creative_factory, campaign, other_campaign):
    own = creative_factory(campaign=campaign)
    creative_factory(campaign=other_campaign)

    response = marketer_api.get("/api/v1/creatives/")

    assert ids(response) == [own.pk]


@pytest.mark.parametrize(("method", "suffix", "body"), [
    ("get", "", None), ("patch", "", {"name": "Hijacked"}), ("delete", "", None),
])
def test_another_advertisers_creative_is_not_found(method, suffix, body, marketer_api,
                                                   creative_factory, other_campaign):
    creative = creative_factory(campaign=other_campaign, name="Contoso banner")

    response = getattr(marketer_api, method)(f"/api/v1/creatives/{creative.pk}/{suffix}", body,
                                             format="json")

    assert response.status_code == 404
    assert response.json() == {"detail": "No Creative matches the given query."}
    assert Creative.objects.get(pk=creative.pk).name == "Contoso banner"
    assert AuditEntry.objects.count() == 0


def test_a_marketer_cannot_add_a_creative_to_another_advertisers_campaign(marketer_api,
                                                                          other_campaign):
    response = marketer_api.post("/api/v1/creatives/", {
        "campaign": other_campaign.pk, "name": "Banner", "format": "banner",
        "sizes": ["300x250"], "markup": "<div>ad</div>", "adomain": "shop.example"},
        format="json")

    assert response.status_code == 400
    assert response.json() == {
        "campaign": [f'Invalid pk "{other_campaign.pk}" - object does not exist.']}
    assert Creative.objects.count() == 0


def test_a_creative_declares_the_app_it_advertises(marketer_api, campaign):
    response = marketer_api.post("/api/v1/creatives/", {
        "campaign": campaign.pk, "name": "Install", "format": "banner", "sizes": ["320x50"],
        "markup": "<div>ad</div>", "adomain": "shop.example", "app_bundle": " com.shop.app "},
        format="json")

    assert response.status_code == 201, response.json()
    assert response.json()["app_bundle"] == "com.shop.app"
    assert Creative.objects.get(pk=response.json()["id"]).app_bundle == "com.shop.app"


def test_a_marketer_cannot_create_an_advertiser(marketer_api):
    response = marketer_api.post("/api/v1/advertisers/", {"name": "Fabrikam"}, format="json")

    assert response.status_code == 403
    assert response.json() == NOT_PERMITTED
    assert not Advertiser.objects.filter(name="Fabrikam").exists()


def test_an_approver_cannot_create_a_campaign(approver_api, advertiser):
    response = approver_api.post("/api/v1/campaigns/", campaign_payload(advertiser),
                                 format="json")

    assert response.status_code == 403
    assert response.json() == NOT_PERMITTED
    assert Campaign.objects.count() == 0


def test_ops_creates_an_advertiser_with_its_marketers(ops_api, marketer):
    response = ops_api.post("/api/v1/advertisers/", {
        "name": "Fabrikam", "domain": "Fabrikam.Example", "marketers": ["marketer-a"]},
        format="json")

    assert response.status_code == 201
    advertiser = Advertiser.objects.get(name="Fabrikam")
    assert (advertiser.domain, list(advertiser.marketers.all())) == ("fabrikam.example",
                                                                     [marketer])
    assert AuditEntry.objects.get().action == "create"


# --- list, search, pagination ----------------------------------------------------------------

def test_the_list_filters_by_status(marketer_api, make_campaign):
    active = make_campaign(Status.ACTIVE)
    paused = make_campaign(Status.PAUSED)
    make_campaign(Status.DRAFT)

    only_active = marketer_api.get("/api/v1/campaigns/?status=active")
    either = marketer_api.get("/api/v1/campaigns/?status=active&status=paused")
    invalid = marketer_api.get("/api/v1/campaigns/?status=launched")

    assert ids(only_active) == [active.pk]
    assert ids(either) == [paused.pk, active.pk]
    assert invalid.status_code == 400
    assert invalid.json() == {"status": [
        "Select a valid choice. launched is not one of the available choices."]}


def test_the_list_searches_names_and_advertisers(ops_api, campaign, other_campaign):
    by_name = ops_api.get("/api/v1/campaigns/?search=rush")
    by_advertiser = ops_api.get("/api/v1/campaigns/?search=contoso")
    nothing = ops_api.get("/api/v1/campaigns/?search=nothing-matches")

    assert ids(by_name) == [campaign.pk]
    assert ids(by_advertiser) == [other_campaign.pk]
    assert nothing.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_the_list_paginates_with_limit_and_offset(marketer_api, make_campaign):
    campaigns = [make_campaign(name=f"Campaign {number}") for number in range(5)]
    newest_first = [campaign.pk for campaign in reversed(campaigns)]

    response = marketer_api.get("/api/v1/campaigns/?limit=2&offset=2")

    body = response.json()
    assert body["count"] == 5
    assert ids(response) == newest_first[2:4]
    assert body["next"] == "http://testserver/api/v1/campaigns/?limit=2&offset=4"
    assert body["previous"] == "http://testserver/api/v1/campaigns/?limit=2"


# --- create, update, delete ------------------------------------------------------------------

def test_create_returns_the_new_draft(marketer_api, advertiser):
    response = marketer_api.post("/api/v1/campaigns/", campaign_payload(
        advertiser, countries=["USA"]), format="json")

    assert response.status_code == 201
    campaign = Campaign.objects.get()
    body = response.json()
    assert {name: body[name] for name in (
        "id", "advertiser", "advertiser_name", "name", "status", "currency", "total_budget",
        "daily_budget", "spent", "countries", "created_by", "approved_by")} == {
        "id": campaign.pk, "advertiser": advertiser.pk, "advertiser_name": "Northwind",
        "name": "Spring Sale", "status": "draft", "currency": "USD",
        "total_budget": "1000.0000", "daily_budget": "100.0000", "spent": "0.0000",
        "countries": ["USA"], "created_by": "marketer-a", "approved_by": None}
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.actor.username, entry.to_status, entry.campaign_id) == (
        "create", "marketer-a", "draft", campaign.pk)


def test_create_ignores_read_only_fields(marketer_api, advertiser, ops):
    response = marketer_api.post("/api/v1/campaigns/", campaign_payload(
        advertiser, status="active", spent="999", approved_by="ops-user"), format="json")

    assert response.status_code == 201
    campaign = Campaign.objects.get()
    assert (campaign.status, campaign.spent, campaign.approved_by) == ("draft", 0, None)


def test_an_invalid_create_returns_every_field_error(marketer_api):
    response = marketer_api.post("/api/v1/campaigns/", {"name": "", "total_budget": "lots"},
                                 format="json")

    assert response.status_code == 400
    assert response.json() == {
        "advertiser": ["This field is required."], "name": ["This field may not be blank."],
        "start_at": ["This field is required."], "end_at": ["This field is required."],
        "total_budget": ["A valid number is required."],
        "daily_budget": ["This field is required."],
        "base_bid_cpm": ["This field is required."], "max_bid_cpm": ["This field is required."]}
    assert Campaign.objects.count() == 0


def test_update_writes_the_change_to_the_audit_log(marketer_api, campaign):
    response = marketer_api.patch(f"/api/v1/campaigns/{campaign.pk}/",
                                  {"daily_budget": "150"}, format="json")

    assert response.status_code == 200
    assert response.json()["daily_budget"] == "150.0000"
    entry = AuditEntry.objects.get()
    assert (entry.action, entry.changes) == ("update",
                                             {"daily_budget": ["100.0000", "150.0000"]})


def test_a_marketer_put_of_an_active_campaign_sends_it_back_to_review(
        marketer_api, make_campaign):
    campaign = make_campaign(Status.ACTIVE, name="Morning Rush")
    body = marketer_api.get(f"/api/v1/campaigns/{campaign.pk}/").json()

    unchanged = marketer_api.put(f"/api/v1/campaigns/{campaign.pk}/", body, format="json")
    changed = marketer_api.put(f"/api/v1/campaigns/{campaign.pk}/",
                               {**body, "max_bid_cpm": "6.0000"}, format="json")

    assert unchanged.status_code == 200
    assert unchanged.json()["status"] == "active"
    assert changed.status_code == 200
    assert changed.json()["status"] == "in_review"
    assert list(AuditEntry.objects.order_by("id").values_list("action", "note")) == [
        ("update", ""), ("transition", "Back to review: changed max_bid_cpm")]


def test_delete_removes_a_draft(marketer_api, campaign):
    response = marketer_api.delete(f"/api/v1/campaigns/{campaign.pk}/")

    assert response.status_code == 204
    assert not Campaign.objects.filter(pk=campaign.pk).exists()
    assert AuditEntry.objects.get().action == "delete"


def test_delete_of_an_active_campaign_is_a_conflict(marketer_api, make_campaign):
    campaign = make_campaign(Status.ACTIVE)

    response = marketer_api.delete(f"/api/v1/campaigns/{campaign.pk}/")

    assert response.status_code == 409
    assert response.json() == {
        "status": ["Only draft or rejected campaigns can be deleted; this one is active. "
                   "Archive it instead."], "code": "not_deletable"}
    assert Campaign.objects.filter(pk=campaign.pk, status="active").exists()
    assert AuditEntry.objects.count() == 0


def test_an_approver_cannot_delete_a_draft(approver_api, campaign):
    response = approver_api.delete(f"/api/v1/campaigns/{campaign.pk}/")

    assert response.status_code == 403
    assert Campaign.objects.filter(pk=campaign.pk).exists()


# --- workflow actions and history ------------------------------------------------------------

def test_workflow_actions_move_the_campaign(marketer_api, approver_api, make_campaign):
    campaign = make_campaign(Status.DRAFT)

    submitted = marketer_api.post(f"/api/v1/campaigns/{campaign.pk}/submit/")
    approved = approver_api.post(f"/api/v1/campaigns/{campaign.pk}/approve/",
                                 {"note": "Fine"}, format="json")
    activated = marketer_api.post(f"/api/v1/campaigns/{campaign.pk}/activate/")

    assert [submitted.status_code, approved.status_code, activated.status_code] == [200] * 3
    assert (submitted.json()["status"], submitted.json()["submitted_by"]) == ("in_review",
                                                                              "marketer-a")
    assert (approved.json()["status"], approved.json()["approved_by"],
            approved.json()["review_note"]) == ("approved", "approver-user", "Fine")
    assert activated.json()["status"] == "active"
    campaign.refresh_from_db()
    assert campaign.status == "active"


def test_a_refused_action_is_a_conflict(approver_api, campaign):
    response = approver_api.post(f"/api/v1/campaigns/{campaign.pk}/approve/")

    assert response.status_code == 409
    assert response.json() == {
        "status": ["Cannot approve a campaign that is draft; allowed from in_review."],
        "code": "invalid_transition"}
    campaign.refresh_from_db()
    assert campaign.status == "draft"
    assert AuditEntry.objects.count() == 0


def test_a_marketer_cannot_approve_through_the_api(marketer_api, make_campaign):
    campaign = make_campaign(Status.IN_REVIEW)

    response = marketer_api.post(f"/api/v1/campaigns/{campaign.pk}/approve/")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "You do not have the 'campaigns.approve_campaign' permission.",
        "code": "permission_denied"}
    campaign.refresh_from_db()
    assert campaign.status == "in_review"
    assert AuditEntry.objects.count() == 0


def test_reject_through_the_api_needs_a_note(approver_api, make_campaign):
    campaign = make_campaign(Status.IN_REVIEW)

    without = approver_api.post(f"/api/v1/campaigns/{campaign.pk}/reject/", {"note": ""},
                                format="json")
    status_after_refusal = Campaign.objects.get(pk=campaign.pk).status
    with_note = approver_api.post(f"/api/v1/campaigns/{campaign.pk}/reject/",
                                  {"note": "Too loud"}, format="json")

    assert without.status_code == 400
    assert without.json() == {"note": ["Say why the campaign is rejected."], "code": "invalid"}
    assert status_after_refusal == "in_review"
    assert with_note.status_code == 200
    assert (with_note.json()["status"], with_note.json()["review_note"]) == ("rejected",
                                                                             "Too loud")


def test_an_unknown_action_is_not_found(marketer_api, campaign):
    response = marketer_api.post(f"/api/v1/campaigns/{campaign.pk}/launch/")

    assert response.status_code == 404
    campaign.refresh_from_db()
    assert campaign.status == "draft"


def test_activate_through_the_api_outside_the_schedule_is_a_conflict(marketer_api,
                                                                     make_campaign):
    campaign = make_campaign(Status.APPROVED, start_at=START, end_at=END)

    response = marketer_api.post(f"/api/v1/campaigns/{campaign.pk}/activate/")

    assert response.status_code == 409
    assert response.json() == {
        "start_at": ["The campaign starts at 2030-03-01 09:00 UTC; it goes active by itself "
                     "then."], "code": "outside_schedule"}
    campaign.refresh_from_db()
    assert campaign.status == "approved"


def test_history_lists_the_campaigns_audit_entries_newest_first(marketer_api, approver_api,
                                                                advertiser):
    created = marketer_api.post("/api/v1/campaigns/", campaign_payload(advertiser),
                                format="json").json()
    path = f"/api/v1/campaigns/{created['id']}"
    marketer_api.post("/api/v1/creatives/", {
        "campaign": created["id"], "name": "Banner", "format": "banner", "sizes": ["300x250"],
        "markup": "<div>ad</div>", "adomain": "shop.example"}, format="json")
    marketer_api.post(f"{path}/submit/")
    approver_api.post(f"{path}/reject/", {"note": "Too loud"}, format="json")

    response = marketer_api.get(f"{path}/history/")

    assert response.status_code == 200
    assert response.json()["count"] == 4
    assert [(entry["action"], entry["entity"], entry["actor"], entry["from_status"],
             entry["to_status"], entry["note"]) for entry in response.json()["results"]] == [
        ("transition", "campaign", "approver-user", "in_review", "rejected", "Too loud"),
        ("transition", "campaign", "marketer-a", "draft", "in_review", "submit"),
        ("create", "creative", "marketer-a", "", "", ""),
        ("create", "campaign", "marketer-a", "", "draft", ""),
    ]


# --- creative review -------------------------------------------------------------------------

def test_an_approver_approves_a_creative(approver_api, creative_factory, campaign):
    creative = creative_factory(campaign=campaign)

    response = approver_api.post(f"/api/v1/creatives/{creative.pk}/approve/")

    assert response.status_code == 200
    assert (response.json()["approval_status"], response.json()["reviewed_by"]) == (
        "approved", "approver-user")
    creative.refresh_from_db()
    assert creative.approval_status == "approved"


def test_rejecting_a_creative_needs_a_note(approver_api, creative_factory, campaign):
    creative = creative_factory(campaign=campaign)

    without = approver_api.post(f"/api/v1/creatives/{creative.pk}/reject/")
    status_after_refusal = Creative.objects.get(pk=creative.pk).approval_status
    with_note = approver_api.post(f"/api/v1/creatives/{creative.pk}/reject/",
                                  {"note": "Blurry"}, format="json")

    assert without.status_code == 400
    assert without.json() == {"note": ["Say why the creative is rejected."], "code": "invalid"}
    assert status_after_refusal == "pending"
    assert (with_note.status_code, with_note.json()["approval_status"],
            with_note.json()["review_note"]) == (200, "rejected", "Blurry")


def test_a_marketer_cannot_approve_a_creative(marketer_api, creative_factory, campaign):
    creative = creative_factory(campaign=campaign)

    response = marketer_api.post(f"/api/v1/creatives/{creative.pk}/approve/")

    assert response.status_code == 403
    assert response.json() == {
        "detail": "You do not have the 'campaigns.approve_creative' permission.",
        "code": "permission_denied"}
    creative.refresh_from_db()
    assert (creative.approval_status, creative.reviewed_by) == ("pending", None)
