"""`/api/v1/loyalty/...` for marketers: their advertisers' programs, tiers, rewards, members
and ledger; other advertisers' are 404; points never move through it."""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from loyalty import services
from loyalty.models import Member, Program
from tests.loyalty.loyalty_fixtures import make_user

pytestmark = pytest.mark.django_db


def test_a_marketer_creates_a_program_with_the_default_tiers(marketer_api, advertiser,
                                                             other_advertiser):
    created = marketer_api.post("/api/v1/loyalty/programs/", {
        "advertiser": advertiser.pk, "name": "Northwind Rewards"}, format="json")
    foreign = marketer_api.post("/api/v1/loyalty/programs/", {
        "advertiser": other_advertiser.pk, "name": "Not mine"}, format="json")

    assert created.status_code == 201
    body = created.json()
    assert (body["currency"], body["qualifying_period_months"], body["points_expiry_days"],
            body["birthday_points"], body["is_active"]) == ("USD", 12, 180, 50, True)
    assert [(tier["name"], tier["qualifying_points"], tier["earn_multiplier"],
             tier["bid_boost"], tier["birthday_window_days"], tier["points_expire"])
            for tier in body["tiers"]] == [
        ("green", 0, "1.000", "1.000", 1, True), ("gold", 500, "1.200", "1.150", 7, False),
        ("reserve", 2500, "1.700", "1.300", 30, False)]
    assert foreign.status_code == 400
    assert list(Program.objects.values_list("name", flat=True)) == ["Northwind Rewards"]


def test_a_second_program_for_one_advertiser_is_refused(marketer_api, program):
    answer = marketer_api.post("/api/v1/loyalty/programs/", {
        "advertiser": program.advertiser_id, "name": "Another"}, format="json")

    assert answer.status_code in (400, 409)
    assert Program.objects.count() == 1


def test_marketers_see_only_their_advertisers_programs_and_members(
        marketer_api, program, other_program):
    services.points_earn(program=program, user_id="u-1", amount=Decimal("10.00"),
                         transaction_id="T-1")
    services.points_earn(program=other_program, user_id="u-2", amount=Decimal("10.00"),
                         currency="EUR", transaction_id="T-1")

    programs = marketer_api.get("/api/v1/loyalty/programs/").json()
    members = marketer_api.get("/api/v1/loyalty/members/").json()
    ledger = marketer_api.get("/api/v1/loyalty/ledger/").json()

    assert [row["name"] for row in programs["results"]] == ["Northwind Rewards"]
    assert [(row["user_id"], row["tier"], row["balance"]) for row in members["results"]] == [
        ("u-1", "green", 10)]
    assert [(row["member"], row["kind"], row["points"]) for row in ledger["results"]] == [
        ("u-1", "earn", 10)]
    other_member = Member.objects.get(user_id="u-2")
    assert marketer_api.get(f"/api/v1/loyalty/programs/{other_program.pk}/").status_code == 404
    assert marketer_api.get(f"/api/v1/loyalty/members/{other_member.pk}/").status_code == 404


def test_enrol_a_member_change_their_birthday_and_read_their_ledger(marketer_api, program):
    enrolled = marketer_api.post("/api/v1/loyalty/members/", {
        "program": program.pk, "user_id": "u-9", "birthday": "1990-06-15",
        "preferred_channel": "app"}, format="json")
    member_id = enrolled.json()["id"]
    changed = marketer_api.patch(f"/api/v1/loyalty/members/{member_id}/",
                                 {"birthday": "1990-06-16", "balance": 5000}, format="json")
    services.points_earn(program=program, user_id="u-9", amount=Decimal("20.00"),
                         transaction_id="T-1")
    entries = marketer_api.get(f"/api/v1/loyalty/members/{member_id}/ledger/").json()

    assert enrolled.status_code == 201
    assert (enrolled.json()["tier"], enrolled.json()["balance"]) == ("green", 0)
    assert changed.status_code == 200
    member = Member.objects.get(pk=member_id)
    assert (str(member.birthday), member.balance) == ("1990-06-16", 20)  # balance not writable
    assert [(row["kind"], row["points"], row["balance_after"], row["transaction_id"])
            for row in entries["results"]] == [("earn", 20, 20, "T-1")]


def test_the_ledger_is_read_only(marketer_api, ops, program):
    ops_api = APIClient()
    ops_api.force_authenticate(ops)

    assert marketer_api.post("/api/v1/loyalty/ledger/", {"points": 1000}).status_code == 403
    assert ops_api.post("/api/v1/loyalty/ledger/", {"points": 1000}).status_code == 405


def test_tiers_rewards_and_promotions_are_edited_through_the_rules(marketer_api, program):
    added = marketer_api.post("/api/v1/loyalty/tiers/", {
        "program": program.pk, "name": "platinum", "qualifying_points": 10000,
        "earn_multiplier": "2.0", "bid_boost": "1.5"}, format="json")
    green = program.tiers.get(name="green")
    no_base = marketer_api.patch(f"/api/v1/loyalty/tiers/{green.pk}/",
                                 {"qualifying_points": 10}, format="json")
    reward = marketer_api.post("/api/v1/loyalty/rewards/", {
        "program": program.pk, "code": "free_pastry", "description": "A pastry",
        "points_cost": 40, "value": "2.50"}, format="json")
    promotion = marketer_api.post("/api/v1/loyalty/promotions/", {
        "program": program.pk, "name": "Web week", "channel": "web", "multiplier": "1.25",
        "starts_at": "2026-01-01T00:00:00Z", "ends_at": "2025-12-01T00:00:00Z"}, format="json")

    assert added.status_code == 201
    assert (no_base.status_code, no_base.json()) == (400, {
        "qualifying_points": ["The lowest tier must start at 0 points."], "code": "invalid"})
    assert program.tiers.get(name="green").qualifying_points == 0
    assert reward.status_code == 201
    assert (promotion.status_code, promotion.json()) == (400, {
        "ends_at": ["The end must be after the start."]})


def test_a_role_without_loyalty_permissions_is_refused(program):
    approver = APIClient()
    approver.force_authenticate(make_user("approver-user", "approver"))

    assert approver.get("/api/v1/loyalty/programs/").status_code == 403
    assert approver.get("/api/v1/loyalty/members/").status_code == 403


def test_the_openapi_schema_documents_the_loyalty_paths(db):
    schema = APIClient().get("/api/schema/?format=json").json()

    assert {"/v1/loyalty/earn", "/v1/loyalty/redeem", "/v1/loyalty/balance/{member}",
            "/v1/loyalty/reward-signal", "/api/v1/loyalty/programs/",
            "/api/v1/loyalty/members/{id}/ledger/", "/api/v1/loyalty/ledger/"} <= set(
        schema["paths"])
    assert schema["components"]["securitySchemes"]["loyaltyApiKey"]["scheme"] == "bearer"
