"""IAB Global Privacy Platform strings (OpenRTB 2.6 `regs.gpp`, with the section ids that apply
in `regs.gpp_sid`), decoded just far enough to answer one question: may the bidder use this
user's data (profile, frequency counts) for targeted advertising?

    allows_targeted_ads(regs.gpp, tuple(regs.gpp_sid))
    allows_targeted_ads(regs.gpp, tuple(regs.gpp_sid), vendor_id=1234)  # TCF vendor consent

A GPP string is `header~section~section...`. The header (base64url) holds Type 6 bits (= 3),
Version 6 bits (= 1) and the ids of the sections that follow, in order, as a Fibonacci integer
range: NumEntries 12 bits, then per entry IsRange 1 bit and a Fibonacci-coded id (a range adds
its Fibonacci-coded length), each id an offset from the previous one. Layouts follow IAB Tech
Lab's GPP "Consent String Specification" as implemented by its reference library iabgpp-java
(HeaderV1CoreSegment, FibonacciIntegerRangeEncoder and the Us*CoreSegment classes).

Only the applicable sections are read:
    2 tcfeuv2   tcf.allows_personalised_ads (purposes 1, 3, 4 and the vendor)
    6 uspv1     "1YYN": a "Y" in third place (opted out of sale) refuses
    7 usnat, 8 usca, 9 usva, 10 usco, 11 usut, 12 usct
                the core subsection's SaleOptOut, SharingOptOut and TargetedAdvertisingOptOut
                (where the section has them): 1 (opted out) refuses; any
                KnownChildSensitiveDataConsents entry other than 0 (a known child) refuses
Any other id (tcfcav1, the later US states, ...) or an applicable id missing from the string
refuses: an unknown section is not read as consent.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from functools import lru_cache

from bidding.openrtb import tcf
from bidding.openrtb.bits import Bits, Malformed

_HEADER_TYPE = 3
_HEADER_VERSION = 1
_TCF_EU_V2 = 2
_USP_V1 = 6
_US_NATIONAL = 7
# A Fibonacci code past this many bits exceeds any id a real string carries (F(32) > 3.5 M).
_MAX_FIBONACCI_BITS = 32


class _UsLayout:
    """Bit offsets of one US section's core subsection, Version 1 (the 2-bit fields: 0 not
    applicable, 1 yes / opted out, 2 no / did not opt out)."""

    __slots__ = ("child_consents", "length", "opt_outs")

    def __init__(self, *, opt_outs: tuple[int, ...], child_consents: tuple[int, int], length: int):
        self.opt_outs = opt_outs  # SaleOptOut, SharingOptOut, TargetedAdvertisingOptOut present
        self.child_consents = child_consents  # (offset, entry count) of KnownChild...Consents
        self.length = length  # bits up to the end of MspaServiceProviderMode

    def allows(self, bits: Bits) -> bool:
        bits.require(self.length)
        if bits.read(0, 6) != 1:
            return False
        if any(bits.read(offset, 2) == 1 for offset in self.opt_outs):
            return False
        offset, count = self.child_consents
        return bits.read(offset, 2 * count) == 0


# Version 6, then each section's notices, opt-outs, SensitiveDataProcessing (n x 2 bits),
# KnownChildSensitiveDataConsents, (PersonalDataConsents,) three MSPA fields.
_US_STATES = {
    # usca: SaleOptOutNotice, SharingOptOutNotice, SensitiveDataLimitUseNotice, SaleOptOut 12,
    # SharingOptOut 14, SensitiveDataProcessing 9, KnownChild 2 at 34, PersonalDataConsents.
    8: _UsLayout(opt_outs=(12, 14), child_consents=(34, 2), length=46),
    # usva: SharingNotice, SaleOptOutNotice, TargetedAdvertisingOptOutNotice, SaleOptOut 12,
    # TargetedAdvertisingOptOut 14, SensitiveDataProcessing 8, KnownChild 1 at 32.
    9: _UsLayout(opt_outs=(12, 14), child_consents=(32, 1), length=40),
    # usco: as usva with SensitiveDataProcessing 7, KnownChild 1 at 30.
    10: _UsLayout(opt_outs=(12, 14), child_consents=(30, 1), length=38),
    # usut: SharingNotice, SaleOptOutNotice, TargetedAdvertisingOptOutNotice,
    # SensitiveDataProcessingOptOutNotice, SaleOptOut 14, TargetedAdvertisingOptOut 16,
    # SensitiveDataProcessing 8, KnownChild 1 at 34.
    11: _UsLayout(opt_outs=(14, 16), child_consents=(34, 1), length=42),
    # usct: as usva with KnownChild 3 at 32.
    12: _UsLayout(opt_outs=(12, 14), child_consents=(32, 3), length=44),
}
# usnat: SharingNotice, SaleOptOutNotice, SharingOptOutNotice, TargetedAdvertisingOptOutNotice,
# SensitiveDataProcessingOptOutNotice, SensitiveDataLimitUseNotice, SaleOptOut 18,
# SharingOptOut 20, TargetedAdvertisingOptOut 22, then SensitiveDataProcessing 16 and
# KnownChild 3, PersonalDataConsents. Strings written before the 2024 update carry 12 and 2
# (60 bits, 11 characters); iabgpp-java tells them apart by length, and so does this module.
_US_NATIONAL_CURRENT = _UsLayout(opt_outs=(18, 20, 22), child_consents=(56, 3), length=70)
_US_NATIONAL_LEGACY = _UsLayout(opt_outs=(18, 20, 22), child_consents=(48, 2), length=60)


def _read_fibonacci(bits: Bits, offset: int) -> tuple[int, int]:
    """The Fibonacci-coded integer at `offset` (bit i worth F(i+2), ended by "11") and the
    offset after it."""
    value, previous, weights = 0, 0, (1, 2)
    for position in range(offset, offset + _MAX_FIBONACCI_BITS):
        bit = bits.read(position, 1)
        if bit and previous:
            return value, position + 1
        value += bit * weights[0]
        weights = (weights[1], weights[0] + weights[1])
        previous = bit
    raise Malformed


def allows_targeted_ads(
    gpp: str, applicable: tuple[int, ...], *, vendor_id: int | None = None
) -> bool:
    """Whether every applicable section of the GPP string lets the bidder use user-level data
    for targeted advertising.

    True when nothing applies (`applicable` empty). False when an applicable section is
    missing, of an id this module does not read, refuses, or the string is malformed: not
    base64url, a header other than Type 3 Version 1, more or fewer sections than the header
    lists, a section too short for its fields. Never raises, so a sender's garbage cannot
    fail a bid.
    """
    if not applicable:
        return True
    try:
        key = tuple(sorted({int(section_id) for section_id in applicable}))
    except (TypeError, ValueError):
        return False
    if not isinstance(gpp, str):
        return False
    return _allows(gpp, key, vendor_id)


@lru_cache(maxsize=4096)
def _allows(gpp: str, applicable: tuple[int, ...], vendor_id: int | None) -> bool:
    """Cached per string, applicable ids and vendor: a user's string repeats on each of their
    requests."""
    header, *sections = gpp.split("~")
    try:
        section_ids = _section_ids(Bits(header), len(sections))
        if len(section_ids) != len(sections):
            return False
        by_id = dict(zip(section_ids, sections, strict=True))
        return all(
            section_id in by_id and _section_allows(section_id, by_id[section_id], vendor_id)
            for section_id in applicable
        )
    except Malformed:
        return False


def _section_ids(header: Bits, section_count: int) -> list[int]:
    """The header's section ids in order; stops at more ids than there are sections, so a
    forged range length cannot make it expand millions of ids."""
    if header.read(0, 6) != _HEADER_TYPE or header.read(6, 6) != _HEADER_VERSION:
        raise Malformed
    entry_count = header.read(12, 12)
    offset = 24
    previous = 0
    section_ids: list[int] = []
    for _ in range(entry_count):
        is_a_range = header.read(offset, 1)
        start, offset = _read_fibonacci(header, offset + 1)
        start += previous
        end = start
        if is_a_range:
            length, offset = _read_fibonacci(header, offset)
            end = start + length
        if len(section_ids) + end - start + 1 > section_count:
            raise Malformed
        section_ids.extend(range(start, end + 1))
        previous = end
    return section_ids


def _section_allows(section_id: int, section: str, vendor_id: int | None) -> bool:
    if section_id == _TCF_EU_V2:
        return tcf.allows_personalised_ads(section, vendor_id=vendor_id)
    if section_id == _USP_V1:
        return _us_privacy_allows(section)
    core, _, _ = section.partition(".")
    if section_id == _US_NATIONAL:
        bits = Bits(core)
        legacy = bits.length < _US_NATIONAL_CURRENT.length
        return (_US_NATIONAL_LEGACY if legacy else _US_NATIONAL_CURRENT).allows(bits)
    layout = _US_STATES.get(section_id)
    return layout is not None and layout.allows(Bits(core))


def _us_privacy_allows(section: str) -> bool:
    """IAB US Privacy "1YYN": version 1, notice given, opted out of sale, LSPA covered; "-"
    where not applicable. Only an opt-out of sale ("Y" third) refuses."""
    if len(section) != 4 or section[0] != "1" or any(flag not in "YN-" for flag in section[1:]):
        return False
    return section[2] != "Y"
