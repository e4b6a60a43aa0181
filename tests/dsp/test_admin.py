"""Ops create and change DSP partners through the admin form: the writes go through the
services (audit, snapshot push), the partner's secret never appears on a page, and a refused
form names the fields at fault."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from campaigns.models import AuditEntry, SnapshotOutbox
from dsp import services
from dsp.models import DspPartner

PARTNERS = "/admin/dsp/dsppartner/"
SECRET = "partner-secret-token-0123456789"

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_form_data(**overrides) -> dict:
    return {"name": "Partner", "seat": "partner-seat", "endpoint_url": "https://dsp.example/bid",
            "openrtb_version": "2.5", "is_enabled": "on", "timeout_ms": "150",
            "qps_limit": "500", "margin": "0.15", "daily_spend_cap": "100",
            "currency": "USD", "formats": '["banner"]', "countries": '["USA"]',
            "device_types": '["phone"]', "credential_ref": "PARTNER_TOKEN", **overrides}


def change_form_data(response) -> dict:
    """What a browser posts back from a change page: every field as rendered."""
    data: dict = {}
    for bound in response.context["adminform"].form:
        value = bound.value()
        if isinstance(value, bool):
            if value:
                data[bound.html_name] = "on"
        elif value is not None:
            data[bound.html_name] = str(value)
    return data


def test_ops_add_a_partner_in_the_admin_and_its_secret_is_never_shown(ops, monkeypatch):
    monkeypatch.setenv("PARTNER_TOKEN", SECRET)
    client = logged_in(ops)
    assert client.get(f"{PARTNERS}add/").status_code == 200

    response = client.post(f"{PARTNERS}add/", add_form_data())

    assert response.status_code == 302
    partner = DspPartner.objects.get()
    assert (partner.seat, partner.openrtb_version, partner.timeout_ms, partner.qps_limit,
            partner.margin, partner.formats, partner.countries, partner.device_types,
            partner.credential_ref, partner.is_enabled) == (
        "partner-seat", "2.5", 150, 500, Decimal("0.1500"), ["banner"], ["USA"], ["phone"],
        "PARTNER_TOKEN", True)
    assert list(AuditEntry.objects.filter(entity="dsppartner").values_list(
        "action", flat=True)) == ["create"]
    assert SnapshotOutbox.objects.count() == 1
    change_page = client.get(f"{PARTNERS}{partner.pk}/change/")
    assert change_page.status_code == 200
    page = change_page.content.decode()
    assert 'value="PARTNER_TOKEN"' in page
    assert SECRET not in page
    assert SECRET not in client.get(PARTNERS).content.decode()


def test_ops_change_a_partner_in_the_admin_through_the_service(ops, monkeypatch):
    monkeypatch.setenv("PARTNER_TOKEN", SECRET)
    partner = services.dsp_partner_create(actor=ops, data={
        "name": "Partner", "seat": "partner-seat", "endpoint_url": "https://dsp.example/bid",
        "credential_ref": "PARTNER_TOKEN", "is_enabled": True})
    client = logged_in(ops)
    change_page = client.get(f"{PARTNERS}{partner.pk}/change/")
    assert SECRET not in change_page.content.decode()
    data = change_form_data(change_page)
    data.update(qps_limit="5", margin="0.2", countries='["USA", "CAN"]')

    response = client.post(f"{PARTNERS}{partner.pk}/change/", data)

    assert response.status_code == 302
    partner.refresh_from_db()
    assert (partner.qps_limit, partner.margin, partner.countries, partner.credential_ref,
            partner.timeout_ms) == (5, Decimal("0.2000"), ["USA", "CAN"], "PARTNER_TOKEN", 200)
    assert list(AuditEntry.objects.filter(entity="dsppartner").order_by("id").values_list(
        "action", flat=True)) == ["create", "update"]
    assert SnapshotOutbox.objects.count() == 2
    assert SECRET not in client.get(f"{PARTNERS}{partner.pk}/change/").content.decode()


def test_a_refused_add_form_names_each_field_at_fault(ops):
    response = logged_in(ops).post(f"{PARTNERS}add/", add_form_data(
        margin="1.5", formats='["poster"]', credential_ref="not a variable", timeout_ms="1",
        endpoint_url="not a url"))

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert sorted(errors) == ["credential_ref", "endpoint_url", "formats", "margin",
                              "timeout_ms"]
    assert errors["credential_ref"] == ["Name an environment variable: A-Z, 0-9 and _."]
    assert errors["margin"] == ["Ensure this value is less than or equal to 0.9."]
    assert errors["timeout_ms"] == ["Ensure this value is greater than or equal to 10."]
    assert DspPartner.objects.count() == 0
    assert AuditEntry.objects.filter(entity="dsppartner").count() == 0


def test_a_refused_change_form_leaves_the_partner_as_it_was(ops):
    partner = services.dsp_partner_create(actor=ops, data={
        "name": "Partner", "seat": "partner-seat", "endpoint_url": "https://dsp.example/bid"})
    client = logged_in(ops)
    data = change_form_data(client.get(f"{PARTNERS}{partner.pk}/change/"))
    data.update(qps_limit="0", countries='["Narnia"]')

    response = client.post(f"{PARTNERS}{partner.pk}/change/", data)

    assert response.status_code == 200
    assert sorted(response.context["adminform"].form.errors) == ["countries", "qps_limit"]
    partner.refresh_from_db()
    assert (partner.qps_limit, partner.countries) == (1000, [])
    assert SnapshotOutbox.objects.count() == 1
