"""IAB TCF v2 consent strings (`user.consent` under GDPR), decoded just far enough to answer
one question: may the bidder use this user's data (profile, frequency counts) to personalise
the ad?

    allows_personalised_ads(view.consent)                    # the purposes only
    allows_personalised_ads(view.consent, vendor_id=1234)    # and our vendor's consent bit

Only the core segment (before the first ".") is read: its fixed fields and the vendor consent
section. The vendor legitimate-interest section and publisher restrictions that follow it are
not read, and neither are the other segments. The layout is the "Core String" of IAB Tech Lab's
"Consent string and vendor list formats v2" (unchanged in TCF v2.2 but for the
UseNonStandardStacks bit's rename to UseNonStandardTexts).

Django-free: the bidder imports it.
"""

from __future__ import annotations

from functools import lru_cache

from bidding.openrtb.bits import Bits, Malformed

# TCF v2.2 Purposes that personalised advertising needs, all on the legal basis of consent:
# 1 store and/or access information on a device, 3 create profiles for personalised
# advertising, 4 use profiles to select personalised advertising.
REQUIRED_PURPOSES = (1, 3, 4)

# Bit offsets of the core segment's fields (Version 6, Created 36, LastUpdated 36, CmpId 12,
# CmpVersion 12, ConsentScreen 6, ConsentLanguage 12, VendorListVersion 12, TcfPolicyVersion 6,
# IsServiceSpecific 1, UseNonStandardTexts 1, SpecialFeatureOptIns 12, then these).
_PURPOSES_CONSENT = 152  # 24 bits, purpose 1 first
_MAX_VENDOR_ID = 213  # after PurposesLITransparency 24, PurposeOneTreatment 1, PublisherCC 12
_IS_RANGE_ENCODING = 229
_VENDOR_ENTRIES = 230  # the BitField, or NumEntries and the range entries

def allows_personalised_ads(consent: str, *, vendor_id: int | None = None) -> bool:
    """Whether the TC string consents to purposes 1, 3 and 4 (and, when `vendor_id` is
    given, to that vendor).

    False for anything that is not a version 2 core segment: empty, not base64url (the spec's
    alphabet without padding: "+", "/" and "=" refuse), too short for the fields it declares,
    a vendor range out of order or past MaxVendorId. Never raises, so a sender's
    garbage cannot fail a bid. PurposeOneTreatment is not honoured: a string that did not
    disclose purpose 1 has its bit at 0 and answers False.
    """
    if not consent:
        return False
    core, _, _ = consent.partition(".")
    return _core_allows(core, vendor_id)


@lru_cache(maxsize=4096)
def _core_allows(core: str, vendor_id: int | None) -> bool:
    """Cached per core segment: a user's string repeats on each of their requests, and the
    part after the first "." (disclosed vendors, publisher TC) does not change the answer."""
    try:
        bits = Bits(core)
        if bits.read(0, 6) != 2:
            return False
        purposes = bits.read(_PURPOSES_CONSENT, 24)
        has_purposes = all((purposes >> (24 - purpose)) & 1 for purpose in REQUIRED_PURPOSES)
        has_vendor = _vendor_consented(bits, vendor_id)
    except Malformed:
        return False
    return has_purposes and (vendor_id is None or has_vendor)


def _vendor_consented(bits: Bits, vendor_id: int | None) -> bool:
    """Decodes the whole vendor consent section, so a truncated string is refused whether or
    not a vendor is asked about."""
    max_vendor_id = bits.read(_MAX_VENDOR_ID, 16)
    if not bits.read(_IS_RANGE_ENCODING, 1):
        bits.require(_VENDOR_ENTRIES + max_vendor_id)
        if vendor_id is None or not 1 <= vendor_id <= max_vendor_id:
            return False
        return bits.read(_VENDOR_ENTRIES + vendor_id - 1, 1) == 1
    entry_count = bits.read(_VENDOR_ENTRIES, 12)
    offset = _VENDOR_ENTRIES + 12
    consented = False
    for _ in range(entry_count):
        is_a_range = bits.read(offset, 1)
        start = end = bits.read(offset + 1, 16)
        offset += 17
        if is_a_range:
            end = bits.read(offset, 16)
            offset += 16
        if not 1 <= start <= end <= max_vendor_id:
            raise Malformed
        if vendor_id is not None and start <= vendor_id <= end:
            consented = True
    return consented
