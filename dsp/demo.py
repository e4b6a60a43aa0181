"""Demo partner DSPs: the four the original design named, disabled until ops point them at a
real endpoint (each is editable in the admin) and enable them."""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser

from dsp.models import DspPartner
from dsp.services import dsp_partner_create

DEMO_BASE_URL = "http://127.0.0.1:9200"

PARTNERS = [
    ("Google DV360", "google-dv360", "2.6", "GOOGLE_DV360_TOKEN", ["banner", "video", "native"]),
    ("Amazon DSP", "amazon-dsp", "2.5", "AMAZON_DSP_TOKEN", ["banner", "video"]),
    ("The Trade Desk", "thetradedesk", "2.6", "TTD_TOKEN", ["banner", "video", "audio"]),
    ("Meta", "meta-ads", "2.5", "META_ADS_TOKEN", ["banner", "native"]),
]


def dsp_demo_seed(*, actor: AbstractBaseUser) -> None:
    """Idempotent: a partner that exists (by seat) is left as ops changed it."""
    for name, seat, version, credential_ref, formats in PARTNERS:
        if DspPartner.objects.filter(seat=seat).exists():
            continue
        dsp_partner_create(actor=actor, data={
            "name": name, "seat": seat, "endpoint_url": f"{DEMO_BASE_URL}/{seat}",
            "openrtb_version": version, "timeout_ms": 120, "qps_limit": 500,
            "margin": Decimal("0.15"), "formats": formats, "daily_spend_cap": Decimal("500"),
            "currency": "USD", "credential_ref": credential_ref, "is_enabled": False})
