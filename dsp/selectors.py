"""Reads for DSP partners: the snapshot entries bidders get and the status page."""

from __future__ import annotations

from typing import Any

from campaign_express.platform import store_call
from dsp.limits import PartnerLimits
from dsp.models import DspPartner
from dsp.partners import PartnerEntry


def dsp_partner_entries() -> tuple[PartnerEntry, ...]:
    """Enabled partners as the snapshot carries them, by id (the same data, the same bytes)."""
    return tuple(
        PartnerEntry(id=partner.pk, name=partner.name, seat=partner.seat,
                     endpoint_url=partner.endpoint_url, openrtb_version=partner.openrtb_version,
                     timeout_ms=partner.timeout_ms, qps_limit=partner.qps_limit,
                     margin=partner.margin, formats=tuple(partner.formats),
                     countries=tuple(partner.countries),
                     device_types=tuple(partner.device_types),
                     daily_spend_cap=partner.daily_spend_cap, currency=partner.currency,
                     credential_ref=partner.credential_ref)
        for partner in DspPartner.objects.filter(is_enabled=True).order_by("id"))


def dsp_status() -> dict[str, Any]:
    """Each partner's state as the bidders share it in the store (`dsp.limits`)."""
    partners = list(DspPartner.objects.order_by("id"))

    async def read(store: Any) -> list[dict[str, object]]:
        limits = PartnerLimits(store)
        return [await limits.state(partner_id=partner.pk) for partner in partners]

    states = store_call(read) if partners else []
    return {"partners": [
        {"id": partner.pk, "name": partner.name, "seat": partner.seat,
         "enabled": partner.is_enabled, "qps_limit": partner.qps_limit,
         "daily_spend_cap": str(partner.daily_spend_cap), "currency": partner.currency,
         **state}
        for partner, state in zip(partners, states, strict=True)]}
