"""What a bidder knows of a partner DSP: the snapshot entry the campaigns app compiles.

It travels in the config snapshot (`bidding.snapshot.Snapshot.dsp_partners`), so a change in
the admin reaches every bidder the way a campaign change does. The credential is never in it:
`credential_ref` names the environment variable the bidder reads the secret from itself.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import os
from decimal import Decimal

import msgspec

OPENRTB_VERSIONS = ("2.5", "2.6")


class PartnerEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    name: str
    seat: str  # the partner's buyer seat id, checked against wseat/bseat
    endpoint_url: str
    openrtb_version: str = "2.6"
    timeout_ms: int = 200
    qps_limit: int = 1000
    margin: Decimal = Decimal(0)  # share of a partner's bid we keep, 0 <= margin < 1
    formats: tuple[str, ...] = ()  # banner, video, native, audio; empty means all
    countries: tuple[str, ...] = ()  # ISO 3166-1 alpha-3; empty means all
    device_types: tuple[str, ...] = ()  # as the bid path names them; empty means all
    daily_spend_cap: Decimal = Decimal(0)  # in `currency` per UTC day; 0 means none
    currency: str = "USD"  # what the partner bids and settles in
    credential_ref: str = ""  # environment variable holding the bearer token ("" for none)


def partner_secret(partner: PartnerEntry) -> str:
    """The bearer token, read where the bidder runs; "" when unset. Never log it."""
    return os.environ.get(partner.credential_ref, "") if partner.credential_ref else ""
