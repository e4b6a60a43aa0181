"""TCF v2 consent strings: purposes 1, 3 and 4 (and our vendor) or no personal data.

Strings are built by a test-only encoder written from the spec's Core String table, and read
back by its inverse; the corpus test decodes the one real TC string of the external OpenRTB
corpus (OPENRTB_CORPUS, skipped with the reason when unset) both ways.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from bidding.openrtb import tcf
from bidding.openrtb.tcf import allows_personalised_ads

CORPUS = os.environ.get("OPENRTB_CORPUS", "")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# The core segment's fields up to the vendor consent section, in order, with their widths.
LAYOUT = (
    ("version", 6),
    ("created", 36),
    ("last_updated", 36),
    ("cmp_id", 12),
    ("cmp_version", 12),
    ("consent_screen", 6),
    ("consent_language", 12),
    ("vendor_list_version", 12),
    ("tcf_policy_version", 6),
    ("is_service_specific", 1),
    ("use_non_standard_texts", 1),
    ("special_feature_opt_ins", 12),
    ("purposes_consent", 24),
    ("purposes_li_transparency", 24),
    ("purpose_one_treatment", 1),
    ("publisher_cc", 12),
)


def letters(code: str) -> int:
    return (ord(code[0]) - ord("a")) << 6 | (ord(code[1]) - ord("a"))


def purpose_bits(purposes: Iterable[int]) -> int:
    return sum(1 << (24 - purpose) for purpose in purposes)


def encode(
    *,
    version: int = 2,
    purposes: Iterable[int] = (1, 2, 3, 4, 7),
    vendors: Iterable[int] = (),
    max_vendor_id: int | None = None,
    range_encoding: bool = False,
) -> str:
    """A core segment as a CMP writes it: bits packed into bytes, base64url without padding.
    Range encoding writes consecutive vendor ids as one range entry."""
    vendor_ids = sorted(vendors)
    if max_vendor_id is None:
        max_vendor_id = vendor_ids[-1] if vendor_ids else 0
    fields = {
        "version": version,
        "created": 16_500_000_000,
        "last_updated": 16_500_000_000,
        "cmp_id": 31,
        "cmp_version": 640,
        "consent_screen": 1,
        "consent_language": letters("en"),
        "vendor_list_version": 126,
        "tcf_policy_version": 4,
        "is_service_specific": 1,
        "use_non_standard_texts": 0,
        "special_feature_opt_ins": 0,
        "purposes_consent": purpose_bits(purposes),
        "purposes_li_transparency": 0,
        "purpose_one_treatment": 0,
        "publisher_cc": letters("de"),
    }
    bits = "".join(format(fields[name], f"0{width}b") for name, width in LAYOUT)
    bits += format(max_vendor_id, "016b")
    if range_encoding:
        entries: list[tuple[int, int]] = []
        for vendor_id in vendor_ids:
            if entries and entries[-1][1] == vendor_id - 1:
                entries[-1] = (entries[-1][0], vendor_id)
            else:
                entries.append((vendor_id, vendor_id))
        bits += "1" + format(len(entries), "012b")
        bits += "".join(
            f"0{start:016b}" if start == end else f"1{start:016b}{end:016b}"
            for start, end in entries
        )
    else:
        bits += "0" + "".join(
            "1" if vendor_id in vendor_ids else "0" for vendor_id in range(1, max_vendor_id + 1)
        )
    bits += "0" * 17 + "0" * 12  # an empty vendor LI section, no publisher restrictions
    return base64_url(bits)


def encode_with_ranges(entries: Iterable[tuple[int, int]], *, max_vendor_id: int) -> str:
    """Range entries written as given, consistent or not."""
    header = decode_bits(encode())[:213]
    listed = list(entries)
    bits = header + format(max_vendor_id, "016b") + "1" + format(len(listed), "012b")
    bits += "".join(f"1{start:016b}{end:016b}" for start, end in listed)
    return base64_url(bits + "0" * 29)


def base64_url(bits: str) -> str:
    bits += "0" * (-len(bits) % 8)
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_bits(consent: str) -> str:
    return "".join(format(ALPHABET.index(char), "06b") for char in consent.split(".")[0])


def decode(consent: str) -> dict[str, object]:
    """The encoder's inverse, field by field, for reading a real string by hand."""
    bits = decode_bits(consent)
    fields: dict[str, object] = {}
    offset = 0
    for name, width in LAYOUT:
        fields[name] = int(bits[offset : offset + width], 2)
        offset += width
    for name in ("consent_language", "publisher_cc"):
        code = fields[name]
        assert isinstance(code, int)
        fields[name] = chr(ord("a") + (code >> 6)) + chr(ord("a") + (code & 63))
    purposes = bits[152:176]
    fields["purposes"] = [index + 1 for index, bit in enumerate(purposes) if bit == "1"]
    max_vendor_id = int(bits[213:229], 2)
    fields["max_vendor_id"] = max_vendor_id
    fields["is_range_encoding"] = int(bits[229])
    assert bits[229] == "0", "only the bitfield encoding is read by hand here"
    bitfield = bits[230 : 230 + max_vendor_id]
    fields["vendors"] = [index + 1 for index, bit in enumerate(bitfield) if bit == "1"]
    return fields


def test_consent_to_purposes_1_3_and_4_allows_personalised_ads():
    assert allows_personalised_ads(encode(purposes=(1, 3, 4))) is True
    assert allows_personalised_ads(encode(purposes=range(1, 12))) is True


@pytest.mark.parametrize("missing", [1, 3, 4])
def test_a_missing_purpose_1_3_or_4_refuses(missing):
    purposes = [purpose for purpose in range(1, 25) if purpose != missing]

    assert allows_personalised_ads(encode(purposes=purposes)) is False


def test_a_string_with_every_purpose_refused_does_not_count_as_consent():
    consent = encode(purposes=(), vendors=range(1, 800))

    assert decode(consent)["purposes"] == []
    assert allows_personalised_ads(consent) is False
    assert allows_personalised_ads(consent, vendor_id=755) is False


@pytest.mark.parametrize("version", [0, 1, 3, 63])
def test_a_version_other_than_2_refuses(version):
    assert allows_personalised_ads(encode(version=version)) is False


@pytest.mark.parametrize(
    "consent",
    [
        "",
        "C",
        "!!!",
        "consent data",
        "CPXxRfAPXxRfAAfKABENB+CgAAAAAAAAAAYgAAAAAAAA",  # standard base64, not base64url
        "CPXxRfAPXxRfAAfKABENB-CgAAAAAAAAAAYgAAAAAAAé",
        ".",
        "." + encode(),
    ],
)
def test_garbage_refuses_without_raising(consent):
    assert allows_personalised_ads(consent) is False
    assert allows_personalised_ads(consent, vendor_id=1) is False


@pytest.mark.parametrize(
    ("range_encoding", "needed_bits"),
    [(False, 230 + 300), (True, 230 + 12 + 17 + 33)],
    ids=["bitfield", "ranges"],
)
def test_a_string_cut_short_of_its_vendor_section_refuses(range_encoding, needed_bits):
    consent = encode(vendors=[5, 40, 41, 42], max_vendor_id=300, range_encoding=range_encoding)

    answers = {
        length: allows_personalised_ads(consent[:length]) for length in range(len(consent) + 1)
    }

    assert answers == {length: length * 6 >= needed_bits for length in range(len(consent) + 1)}


def test_a_range_entry_out_of_order_or_past_max_vendor_id_refuses():
    assert allows_personalised_ads(encode_with_ranges([(2, 9)], max_vendor_id=9)) is True
    assert allows_personalised_ads(encode_with_ranges([(9, 2)], max_vendor_id=9)) is False
    assert allows_personalised_ads(encode_with_ranges([(2, 10)], max_vendor_id=9)) is False
    assert allows_personalised_ads(encode_with_ranges([(0, 3)], max_vendor_id=9)) is False


@pytest.mark.parametrize("range_encoding", [False, True], ids=["bitfield", "ranges"])
def test_vendor_consent_is_read_from_either_encoding(range_encoding):
    consent = encode(vendors=[3, 10, 11, 12, 755], max_vendor_id=800, range_encoding=range_encoding)

    answers = {
        vendor_id: allows_personalised_ads(consent, vendor_id=vendor_id)
        for vendor_id in (0, 2, 3, 4, 9, 10, 11, 12, 13, 755, 800, 801)
    }

    assert answers == {
        0: False,
        2: False,
        3: True,
        4: False,
        9: False,
        10: True,
        11: True,
        12: True,
        13: False,
        755: True,
        800: False,
        801: False,
    }


def test_vendor_consent_without_the_purposes_refuses():
    consent = encode(purposes=(1, 3), vendors=[755], range_encoding=True)

    assert allows_personalised_ads(consent, vendor_id=755) is False


def test_only_the_core_segment_counts():
    refused, allowed = encode(purposes=()), encode()

    assert allows_personalised_ads(f"{allowed}.{refused}") is True
    assert allows_personalised_ads(f"{allowed}.!!not a segment!!") is True
    assert allows_personalised_ads(f"{refused}.{allowed}") is False


def test_answers_are_cached_per_core_segment():
    tcf._core_allows.cache_clear()
    consent = encode(vendors=[7])

    allows_personalised_ads(consent, vendor_id=7)
    allows_personalised_ads(
        f"{consent}.IFukWSQgAIQwgI0QEByFAAAAeIAACAIgSAAQAIAgEQACEABAAAgAQ", vendor_id=7
    )
    allows_personalised_ads(consent, vendor_id=8)

    info = tcf._core_allows.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 2, 4096)


def corpus_consent(path: Path) -> str:
    user = json.loads(path.read_bytes()).get("user") or {}
    return str(user.get("consent") or (user.get("ext") or {}).get("consent") or "")


@pytest.mark.skipif(not CORPUS, reason="OPENRTB_CORPUS is not set")
def test_the_corpus_tc_string_consents_to_purposes_1_to_10_and_103_vendors():
    """Prebid Server's madvertise fixture carries a real CMP's string (CMP 44, French UI)."""
    consent = corpus_consent(Path(CORPUS) / "prebid-server__madvertise-app-video-eur.request.json")

    fields = decode(consent)

    assert {
        name: fields[name]
        for name in (
            "version",
            "created",
            "last_updated",
            "cmp_id",
            "cmp_version",
            "consent_screen",
            "consent_language",
            "vendor_list_version",
            "tcf_policy_version",
            "is_service_specific",
            "use_non_standard_texts",
            "special_feature_opt_ins",
            "purposes",
            "purposes_li_transparency",
            "purpose_one_treatment",
            "publisher_cc",
            "max_vendor_id",
            "is_range_encoding",
        )
    } == {
        "version": 2,
        "created": 16_078_824_930,
        "last_updated": 16_097_420_584,
        "cmp_id": 44,
        "cmp_version": 49,
        "consent_screen": 1,
        "consent_language": "fr",
        "vendor_list_version": 68,
        "tcf_policy_version": 2,
        "is_service_specific": 1,
        "use_non_standard_texts": 0,
        "special_feature_opt_ins": 0b1100_0000_0000,
        "purposes": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        "purposes_li_transparency": purpose_bits(range(2, 11)),
        "purpose_one_treatment": 0,
        "publisher_cc": "fr",
        "max_vendor_id": 793,
        "is_range_encoding": 0,
    }
    vendors = fields["vendors"]
    assert isinstance(vendors, list)
    assert (len(vendors), vendors[:6], vendors[-3:]) == (
        103,
        [10, 11, 12, 13, 15, 16],
        [746, 755, 793],
    )
    assert allows_personalised_ads(consent) is True
    assert {
        vendor_id: allows_personalised_ads(consent, vendor_id=vendor_id)
        for vendor_id in (10, 14, 755, 793, 794)
    } == {10: True, 14: False, 755: True, 793: True, 794: False}


@pytest.mark.skipif(not CORPUS, reason="OPENRTB_CORPUS is not set")
def test_the_corpus_placeholder_consent_strings_refuse():
    """The other consent strings in the corpus are fixtures' placeholders: too short for a core
    segment ("CO12345…", 198 bits), or a version other than 2 ("consent-string" reads 7)."""
    placeholders = {
        "prebid-server__eskimi-privacy-signals-gpp.request": "CO12345abcdefghijklmnopqrstuvwxyz",
        "prebid-server__mobkoi-banner-web-user-consent.request": "consent-string",
        "prebid-server__rubicon-25-26-transition.request": "consent",
        "prebid-server__smaato-simple-banner-dooh.request": "gdprConsentString",
        "prebid-server__smaato-simple-banner-eids-coppa.request": "gdprConsentString",
        "rtb4free__Bidswitch-AppWithDomain": "Y29uc2VudCBkYXRh",
        "rtb4free__Bidswitch-Bannerad": "Y29uc2VudCBkYXRh",
        "rtb4free__gdprCONSENT": "thisisconstentedto",
    }

    consents = {name: corpus_consent(Path(CORPUS) / f"{name}.json") for name in placeholders}

    assert consents == placeholders
    answers = {name: allows_personalised_ads(consent) for name, consent in consents.items()}
    assert answers == dict.fromkeys(placeholders, False)
