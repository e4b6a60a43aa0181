"""Enabled partners travel to bidders in the config snapshot, without their secret."""

from __future__ import annotations

import gzip
from decimal import Decimal

import pytest

from bidding.snapshot import decode, encode
from campaigns.snapshot import snapshot_compile
from dsp import services

SECRET = "partner-secret-token-0123456789"


@pytest.mark.django_db
def test_the_snapshot_carries_enabled_partners_and_no_secret(ops, monkeypatch):
    monkeypatch.setenv("PARTNER_TOKEN", SECRET)
    partner = services.dsp_partner_create(actor=ops, data={
        "name": "Partner", "seat": "partner-seat", "endpoint_url": "https://dsp.example/bid",
        "margin": Decimal("0.1"), "credential_ref": "PARTNER_TOKEN", "is_enabled": True})
    services.dsp_partner_create(actor=ops, data={
        "name": "Off", "seat": "off", "endpoint_url": "https://off.example/bid"})

    data = encode(snapshot_compile(version=7))

    [entry] = decode(data).dsp_partners
    assert (entry.id, entry.seat, entry.margin, entry.credential_ref) == (
        partner.pk, "partner-seat", Decimal("0.1000"), "PARTNER_TOKEN")
    assert SECRET.encode() not in gzip.decompress(data)
