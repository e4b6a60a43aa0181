"""Loyalty in the admin: pages render for marketers within their advertisers, a program is
added with its tiers, an API key is shown once and works, the ledger cannot be edited."""

from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from loyalty import services
from loyalty.models import ApiKey, LedgerEntry, Member, Program

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def inline_management(prefix: str, total: int = 0) -> dict[str, str]:
    return {f"{prefix}-TOTAL_FORMS": str(total), f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}


@pytest.fixture
def objects(program):
    services.points_earn(program=program, user_id="u-1", amount=Decimal("10.00"),
                         transaction_id="T-1")
    api_key, _ = services.api_key_create(actor=None, program=program, name="Till 1",
                                         actions=["earn"])
    member = Member.objects.get()
    return {"program": program, "member": member, "ledgerentry": member.ledger.get(),
            "apikey": api_key}


@pytest.mark.parametrize("model", ["program", "member", "ledgerentry", "apikey"])
def test_pages_render_for_the_marketer_and_hide_other_advertisers(model, marketer, objects,
                                                                  other_program):
    client = logged_in(marketer)
    obj = objects[model]

    changelist = client.get(f"/admin/loyalty/{model}/")
    change = client.get(f"/admin/loyalty/{model}/{obj.pk}/change/")

    assert changelist.status_code == change.status_code == 200
    assert list(changelist.context["cl"].result_list) == [obj]
    assert client.get(f"/admin/loyalty/program/{other_program.pk}/change/").status_code == 302


def test_a_program_added_without_tiers_gets_the_default_ones(marketer, advertiser):
    response = logged_in(marketer).post("/admin/loyalty/program/add/", {
        "advertiser": advertiser.pk, "name": "Northwind Rewards", "currency": "USD",
        "qualifying_period_months": "12", "points_expiry_days": "180",
        "birthday_points": "50", "is_active": "on", **inline_management("tiers"),
        **inline_management("rewards"), **inline_management("promotions")})

    assert response.status_code == 302, response.context["errors"] if response.context else ""
    program = Program.objects.get()
    assert list(program.tiers.values_list("name", "qualifying_points")) == [
        ("green", 0), ("gold", 500), ("reserve", 2500)]


def test_a_program_added_with_tiers_needs_one_at_zero(marketer, advertiser):
    data = {"advertiser": advertiser.pk, "name": "Northwind Rewards", "currency": "USD",
            "qualifying_period_months": "12", "points_expiry_days": "180",
            "birthday_points": "50", **inline_management("tiers", 1),
            "tiers-0-name": "silver", "tiers-0-qualifying_points": "100",
            "tiers-0-earn_multiplier": "1", "tiers-0-bid_boost": "1",
            "tiers-0-birthday_window_days": "1", **inline_management("rewards"),
            **inline_management("promotions")}

    refused = logged_in(marketer).post("/admin/loyalty/program/add/", data)
    data["tiers-0-qualifying_points"] = "0"
    added = logged_in(marketer).post("/admin/loyalty/program/add/", data)

    assert refused.status_code == 200
    assert "The lowest tier must start at 0 points." in refused.content.decode()
    assert added.status_code == 302
    assert list(Program.objects.get().tiers.values_list("name", flat=True)) == ["silver"]


def test_an_api_key_is_shown_once_and_works(marketer, program, client):
    response = logged_in(marketer).post("/admin/loyalty/apikey/add/", {
        "program": program.pk, "name": "Store 12 tills", "actions": ["earn", "balance"]},
        follow=True)

    [message] = [m.message for m in get_messages(response.wsgi_request)
                 if "shown only now" in m.message]
    secret = message.rsplit(" ", 1)[1]
    api_key = ApiKey.objects.get()
    assert (api_key.actions, api_key.prefix, api_key.created_by) == (
        ["earn", "balance"], secret[:10], marketer)
    assert secret not in logged_in(marketer).get(
        f"/admin/loyalty/apikey/{api_key.pk}/change/").content.decode()
    earned = client.post("/v1/loyalty/earn", {"member": "u-1", "amount": "5",
                                              "transaction_id": "T-1"},
                         content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert (earned.status_code, earned.json()["points_earned"]) == (200, 5)


def test_the_ledger_cannot_be_added_to_or_changed(ops, objects):
    client = logged_in(ops)
    entry = objects["ledgerentry"]

    assert client.get("/admin/loyalty/ledgerentry/add/").status_code == 403
    client.post(f"/admin/loyalty/ledgerentry/{entry.pk}/change/", {"points": "9999"})
    client.post(f"/admin/loyalty/ledgerentry/{entry.pk}/delete/", {"post": "yes"})

    assert list(LedgerEntry.objects.values_list("points", flat=True)) == [10]
