"""DSP partners in the API, the admin, the snapshot and the status page."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import pytest
from django.test import Client

from campaign_express.platform import store_call
from campaigns.models import AuditEntry, SnapshotOutbox
from dsp import services
from dsp.demo import dsp_demo_seed
from dsp.limits import PartnerLimits
from dsp.models import DspPartner
from dsp.partners import PartnerEntry, partner_secret
from dsp.selectors import dsp_partner_entries

PARTNERS = "/api/v1/dsp-partners/"
SECRET = "partner-secret-token-0123456789"


def partner_data(**overrides) -> dict:
    return {"name": "Partner", "seat": "partner-seat", "endpoint_url": "https://dsp.example/bid",
            "openrtb_version": "2.5", "margin": "0.1500", "formats": ["banner"],
            "countries": ["USA"], "device_types": ["phone"], "daily_spend_cap": "100.0000",
            "credential_ref": "PARTNER_TOKEN", "is_enabled": True, **overrides}


@pytest.mark.django_db
def test_ops_create_a_partner_whose_secret_is_never_shown_back(ops_api, monkeypatch):
    monkeypatch.setenv("PARTNER_TOKEN", SECRET)
    response = ops_api.post(PARTNERS, partner_data(), format="json")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["credential_ref"], body["margin"], body["openrtb_version"]) == (
        "PARTNER_TOKEN", "0.1500", "2.5")
    assert SECRET not in response.content.decode()
    assert SECRET not in ops_api.get(PARTNERS).content.decode()
    assert SnapshotOutbox.objects.count() == 1
    assert AuditEntry.objects.get(entity="dsppartner").action == "create"
    [entry] = dsp_partner_entries()
    assert SECRET not in repr(entry)
    assert partner_secret(entry) == SECRET  # resolved where the bidder runs, only there


@pytest.mark.django_db
def test_invalid_partners_are_refused(ops_api):
    response = ops_api.post(PARTNERS, partner_data(margin="1.5", formats=["poster"],
                                                   credential_ref="not a variable"),
                            format="json")

    assert response.status_code == 400
    assert sorted(response.json()) == ["credential_ref", "formats", "margin"]
    assert DspPartner.objects.count() == 0


@pytest.mark.django_db
def test_marketers_may_look_but_not_change(marketer_api, ops):
    partner = services.dsp_partner_create(actor=ops, data=partner_data())

    assert marketer_api.get(PARTNERS).status_code == 200
    response = marketer_api.patch(f"{PARTNERS}{partner.pk}/", {"margin": "0.5"}, format="json")
    assert response.status_code == 403
    partner.refresh_from_db()
    assert partner.margin == Decimal("0.1500")


@pytest.mark.django_db
def test_only_enabled_partners_reach_the_snapshot(ops):
    enabled = services.dsp_partner_create(actor=ops, data=partner_data())
    services.dsp_partner_create(actor=ops, data=partner_data(name="Off", seat="off",
                                                             is_enabled=False))

    assert dsp_partner_entries() == (PartnerEntry(
        id=enabled.pk, name="Partner", seat="partner-seat",
        endpoint_url="https://dsp.example/bid", openrtb_version="2.5", timeout_ms=200,
        qps_limit=1000, margin=Decimal("0.1500"), formats=("banner",), countries=("USA",),
        device_types=("phone",), daily_spend_cap=Decimal("100.0000"), currency="USD",
        credential_ref="PARTNER_TOKEN"),)


@pytest.mark.django_db
def test_the_demo_partners_are_seeded_once(ops):
    dsp_demo_seed(actor=ops)
    dsp_demo_seed(actor=ops)

    assert list(DspPartner.objects.order_by("id").values_list("seat", "is_enabled")) == [
        ("google-dv360", False), ("amazon-dsp", False), ("thetradedesk", False),
        ("meta-ads", False)]


@pytest.mark.django_db
def test_the_admin_lists_partners_without_secrets(ops, monkeypatch):
    monkeypatch.setenv("PARTNER_TOKEN", SECRET)
    services.dsp_partner_create(actor=ops, data=partner_data())
    client = Client()
    client.force_login(ops)

    listing = client.get("/admin/dsp/dsppartner/")
    assert listing.status_code == 200
    assert "partner-seat" in listing.content.decode()
    assert SECRET not in listing.content.decode()


@pytest.mark.django_db
def test_the_status_page_shows_what_bidders_share(ops, settings):
    settings.REDIS_URL = ""
    partner = services.dsp_partner_create(actor=ops, data=partner_data(
        seat=f"seat-{random.randrange(10**6)}"))
    now = time.time()

    async def bidders_worked(store) -> None:
        limits = PartnerLimits(store)
        await limits.add_spend(partner_id=partner.pk, micros=1_500_000, now=now)

    store_call(bidders_worked)
    body = Client().get("/v1/dsp/status").json()

    [state] = body["partners"]
    assert {key: state[key] for key in ("seat", "enabled", "breaker", "spend_today_micros")} == {
        "seat": partner.seat, "enabled": True, "breaker": "closed",
        "spend_today_micros": 1_500_000}
