"""The request a partner receives: valid OpenRTB in its version, privacy kept, user data only
with consent.

Privacy fields moved between 2.5 and 2.6 (`regs.ext.gdpr` to `regs.gdpr`, `user.ext.consent` to
`user.consent`, `source.ext.schain` to `source.schain`, ...). A partner gets them where its
version reads them: sent where it does not look, a GDPR flag is lost and the partner may bid
on data it may not use. Without the user's consent the user and device identifiers are
removed before the request leaves us; the privacy signals themselves always go along.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from dsp.partners import PartnerEntry

# (object, field): 2.6 holds it at object.field, 2.5 at object.ext.field.
MOVED_FIELDS = (("regs", "gdpr"), ("regs", "us_privacy"), ("regs", "gpp"), ("regs", "gpp_sid"),
                ("user", "consent"), ("user", "eids"), ("source", "schain"))
USER_IDENTIFIERS = ("id", "buyeruid", "yob", "gender", "keywords", "kwarray", "customdata",
                    "geo", "data", "eids", "consent_ids")
DEVICE_IDENTIFIERS = ("ifa", "didsha1", "didmd5", "dpidsha1", "dpidmd5", "macsha1", "macmd5")


def _to_version(request: dict[str, Any], version: str) -> None:
    for name, field in MOVED_FIELDS:
        holder = request.get(name)
        if not isinstance(holder, dict):
            continue
        ext = holder.get("ext") if isinstance(holder.get("ext"), dict) else None
        if version == "2.6":
            if ext is not None and field in ext:
                value = ext.pop(field)
                holder.setdefault(field, value)
                if not ext:
                    del holder["ext"]
        elif field in holder:
            value = holder.pop(field)
            holder.setdefault("ext", {}).setdefault(field, value)


def _strip_user_data(request: dict[str, Any]) -> None:
    user = request.get("user")
    if isinstance(user, dict):
        for field in USER_IDENTIFIERS:
            user.pop(field, None)
        ext = user.get("ext")
        if isinstance(ext, dict):
            ext.pop("eids", None)
    device = request.get("device")
    if isinstance(device, dict):
        for field in DEVICE_IDENTIFIERS:
            device.pop(field, None)
        geo = device.get("geo")
        if isinstance(geo, dict):
            for field in ("lat", "lon", "accuracy", "ipservice"):
                geo.pop(field, None)
        ip = device.get("ip")
        if isinstance(ip, str) and ip.count(".") == 3:
            device["ip"] = ip.rsplit(".", 1)[0] + ".0"  # the network, not the household
        device.pop("ipv6", None)


def partner_request(request: dict[str, Any], *, partner: PartnerEntry, imp_ids: set[str],
                    tmax_ms: int, has_user_consent: bool) -> dict[str, Any]:
    """A copy of the exchange's request for ``partner``: only the impressions it wants, its
    time budget as `tmax`, floors raised by our margin (a bid that clears the floor only
    before our margin would lose), privacy fields in its version's places, and without user
    identifiers when consent is missing. Seat lists (`wseat`/`bseat`) and `regs` go along."""
    sent = copy.deepcopy(request)
    sent["imp"] = [imp for imp in sent.get("imp", []) if str(imp.get("id")) in imp_ids]
    sent["tmax"] = tmax_ms
    if partner.margin:
        for imp in sent["imp"]:
            floor = imp.get("bidfloor")
            if isinstance(floor, int | float) and floor > 0:
                imp["bidfloor"] = float(gross_price(Decimal(str(floor)), partner.margin))
    _to_version(sent, partner.openrtb_version)
    if not has_user_consent:
        _strip_user_data(sent)
    return sent


def gross_price(net: Decimal, margin: Decimal) -> Decimal:
    """What a partner must bid for ``net`` to remain once our margin is taken."""
    return (net / (1 - margin)).quantize(Decimal("0.0001"))
