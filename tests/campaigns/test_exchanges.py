"""Exchanges and currency rates: validation, the write-only token, audit, admin and API."""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import Client

from campaigns import exchanges
from campaigns.models import AuditEntry, CurrencyRate, Exchange, SnapshotOutbox

EXCHANGES = "/api/v1/exchanges/"
TOKEN = "s3cret-exchange-token-0123456789"
TOKEN_SHA256 = hashlib.sha256(TOKEN.encode()).hexdigest()


def exchange_data(**overrides) -> dict:
    return {"name": "OpenX", "slug": "openx", "seat": "seat-42", "currency": "USD",
            **overrides}


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_ops_create_an_exchange_with_a_token_that_is_never_shown_back(ops_api):
    response = ops_api.post(EXCHANGES, exchange_data(auth="token", token=TOKEN,
                                                     is_default=True), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert {key: body[key] for key in ("slug", "auth", "has_token", "is_default")} == {
        "slug": "openx", "auth": "token", "has_token": True, "is_default": True}
    assert "token" not in body
    assert TOKEN not in response.content.decode()
    assert TOKEN_SHA256 not in response.content.decode()
    exchange = Exchange.objects.get()
    assert exchange.token_sha256 == TOKEN_SHA256
    listing = ops_api.get(EXCHANGES).content.decode()
    assert TOKEN not in listing and TOKEN_SHA256 not in listing
    entry = AuditEntry.objects.get(entity="exchange")
    assert (entry.action, entry.changes["token"], entry.advertiser_id) == (
        "create", ["not set", "set"], None)
    assert TOKEN not in str(entry.changes) and TOKEN_SHA256 not in str(entry.changes)
    assert SnapshotOutbox.objects.count() == 1


def test_an_update_without_a_token_keeps_it_and_a_new_one_replaces_it(ops, ops_api):
    exchange = exchanges.exchange_create(actor=ops, data=exchange_data(auth="token"),
                                        token=TOKEN)

    kept = ops_api.patch(f"{EXCHANGES}{exchange.pk}/", {"seat": "seat-43"}, format="json")
    exchange.refresh_from_db()
    assert (kept.status_code, exchange.seat, exchange.token_sha256) == (
        200, "seat-43", TOKEN_SHA256)

    replaced = ops_api.patch(f"{EXCHANGES}{exchange.pk}/", {"token": "another-token-0123456"},
                             format="json")
    exchange.refresh_from_db()
    assert replaced.status_code == 200
    assert exchange.token_sha256 == hashlib.sha256(b"another-token-0123456").hexdigest()
    assert AuditEntry.objects.filter(entity="exchange").first().changes == {
        "token": ["set", "replaced"]}


@pytest.mark.parametrize(("overrides", "field", "message"), [
    ({"auth": "ip", "allowed_networks": ["10.0.0.1/8"]}, "allowed_networks",
     "Not a valid network in CIDR form (10.0.0.0/8, 2001:db8::/32): 10.0.0.1/8."),
    ({"auth": "ip", "allowed_networks": ["not-a-network"]}, "allowed_networks",
     "Not a valid network in CIDR form (10.0.0.0/8, 2001:db8::/32): not-a-network."),
    ({"auth": "ip", "allowed_networks": []}, "allowed_networks",
     "IP authentication needs at least one network."),
    ({"auth": "token"}, "token", "Token authentication needs a token."),
    ({"price_decryption": "doubleclick"}, "price_key_ref",
     "Name the environment variable holding the key."),
    ({"price_decryption": "doubleclick", "price_key_ref": "not a variable"}, "price_key_ref",
     "Name an environment variable: A-Z, 0-9 and _."),
    ({"price_decryption": "rot13", "price_key_ref": "KEY"}, "price_decryption",
     '"rot13" is not a valid choice.'),
    ({"currency": "XYZ"}, "currency", "'XYZ' is not an ISO 4217 currency code."),
    ({"no_bid_style": "500"}, "no_bid_style", '"500" is not a valid choice.'),
])
def test_invalid_exchanges_are_refused_with_the_field_named(ops_api, overrides, field,
                                                            message):
    response = ops_api.post(EXCHANGES, exchange_data(**overrides), format="json")

    assert response.status_code == 400
    assert response.json()[field] == [message]
    assert Exchange.objects.count() == 0
    assert SnapshotOutbox.objects.count() == 0


def test_networks_are_stored_in_canonical_form(ops):
    exchange = exchanges.exchange_create(actor=ops, data=exchange_data(
        auth="ip", allowed_networks=["192.0.2.0/24", "2001:DB8::/32"]))

    assert exchange.allowed_networks == ["192.0.2.0/24", "2001:db8::/32"]


def test_only_one_exchange_can_be_the_default(ops, ops_api):
    exchanges.exchange_create(actor=ops, data=exchange_data(is_default=True))

    response = ops_api.post(EXCHANGES, exchange_data(name="Magnite", slug="magnite",
                                                     is_default=True), format="json")

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": [
        "Another exchange is already the default; unset it first."]}
    with pytest.raises(IntegrityError), transaction.atomic():
        Exchange.objects.create(name="Direct", slug="direct", seat="s", is_default=True)


def test_the_database_refuses_token_auth_without_a_token(db):
    with pytest.raises(IntegrityError), transaction.atomic():
        Exchange.objects.create(name="X", slug="x", seat="s", auth="token")


def test_marketers_cannot_see_exchanges(marketer_api):
    assert marketer_api.get(EXCHANGES).status_code == 403


def test_the_admin_takes_a_token_and_shows_only_that_one_is_set(ops):
    client = logged_in(ops)
    add = client.get("/admin/campaigns/exchange/add/")
    assert add.status_code == 200

    response = client.post("/admin/campaigns/exchange/add/", {
        "name": "OpenX", "slug": "openx", "seat": "seat-42", "is_active": "on",
        "auth": "token", "token": TOKEN, "allowed_networks": "", "price_decryption": "",
        "price_key_ref": "", "currency": "USD", "no_bid_style": "nbr"})

    assert response.status_code == 302, response.context["adminform"].form.errors
    exchange = Exchange.objects.get()
    assert (exchange.token_sha256, exchange.no_bid_style) == (TOKEN_SHA256, "nbr")
    for page in ("/admin/campaigns/exchange/", f"/admin/campaigns/exchange/{exchange.pk}/change/"):
        html = client.get(page).content.decode()
        assert TOKEN not in html and TOKEN_SHA256 not in html
    change = client.get(f"/admin/campaigns/exchange/{exchange.pk}/change/")
    assert change.context["adminform"].form.initial.get("token") is None
    assert AuditEntry.objects.get(entity="exchange").actor == ops


def test_ops_set_currency_rates_in_the_admin_and_usd_is_refused(ops):
    client = logged_in(ops)

    response = client.post("/admin/campaigns/currencyrate/add/",
                           {"currency": "eur", "units_per_usd": "0.9215"})
    refused = client.post("/admin/campaigns/currencyrate/add/",
                          {"currency": "USD", "units_per_usd": "1"})

    assert response.status_code == 302
    assert refused.status_code == 200
    assert refused.context["adminform"].form.errors["currency"] == [
        "USD is the base currency: its rate is 1."]
    rate = CurrencyRate.objects.get()
    assert (rate.currency, rate.units_per_usd) == ("EUR", Decimal("0.92150000"))
    assert SnapshotOutbox.objects.count() == 1


def test_currency_rate_set_updates_audits_and_refuses_a_zero_rate(ops):
    exchanges.currency_rate_set(actor=ops, currency="GBP", units_per_usd=Decimal("0.8"))
    exchanges.currency_rate_set(actor=ops, currency="GBP", units_per_usd=Decimal("0.79"))

    with pytest.raises(ValidationError):
        exchanges.currency_rate_set(actor=ops, currency="JPY", units_per_usd=Decimal("0"))

    assert CurrencyRate.objects.get().units_per_usd == Decimal("0.79000000")
    assert [(entry.action, entry.changes) for entry in
            AuditEntry.objects.filter(entity="currencyrate").order_by("id")] == [
        ("create", {"currency": [None, "GBP"], "units_per_usd": [None, "0.8"]}),
        ("update", {"units_per_usd": ["0.80000000", "0.79"]}),
    ]
    assert SnapshotOutbox.objects.count() == 2
