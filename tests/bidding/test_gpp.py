"""GPP strings: every applicable section must allow targeted advertising, or no user data.

Strings are built by a test-only encoder written from the GPP header (Fibonacci integer range)
and the US sections' core layouts, and read back by its inverse; TC strings come from the TCF
tests' encoder. The corpus tests read the external OpenRTB corpus in place (OPENRTB_CORPUS,
skipped with the reason when unset).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pytest

from bidding.openrtb import gpp
from bidding.openrtb.bits import Bits
from bidding.openrtb.gpp import allows_targeted_ads
from tests.bidding.test_tcf import base64_url, decode_bits
from tests.bidding.test_tcf import decode as decode_tc_string
from tests.bidding.test_tcf import encode as tc_string

CORPUS = os.environ.get("OPENRTB_CORPUS", "")

# Core subsection fields after Version (6 bits), in order; lists are n x 2 bits.
US_LAYOUTS: dict[int, tuple[tuple[str, int], ...]] = {
    7: (
        ("sharing_notice", 1), ("sale_opt_out_notice", 1), ("sharing_opt_out_notice", 1),
        ("targeted_advertising_opt_out_notice", 1), ("sensitive_data_opt_out_notice", 1),
        ("sensitive_data_limit_use_notice", 1), ("sale_opt_out", 1), ("sharing_opt_out", 1),
        ("targeted_advertising_opt_out", 1), ("sensitive_data_processing", 16),
        ("known_child", 3), ("personal_data_consents", 1), ("mspa_covered", 1),
        ("mspa_opt_out_mode", 1), ("mspa_service_provider_mode", 1),
    ),
    8: (
        ("sale_opt_out_notice", 1), ("sharing_opt_out_notice", 1),
        ("sensitive_data_limit_use_notice", 1), ("sale_opt_out", 1), ("sharing_opt_out", 1),
        ("sensitive_data_processing", 9), ("known_child", 2), ("personal_data_consents", 1),
        ("mspa_covered", 1), ("mspa_opt_out_mode", 1), ("mspa_service_provider_mode", 1),
    ),
    9: (
        ("sharing_notice", 1), ("sale_opt_out_notice", 1),
        ("targeted_advertising_opt_out_notice", 1), ("sale_opt_out", 1),
        ("targeted_advertising_opt_out", 1), ("sensitive_data_processing", 8),
        ("known_child", 1), ("mspa_covered", 1), ("mspa_opt_out_mode", 1),
        ("mspa_service_provider_mode", 1),
    ),
    12: (
        ("sharing_notice", 1), ("sale_opt_out_notice", 1),
        ("targeted_advertising_opt_out_notice", 1), ("sale_opt_out", 1),
        ("targeted_advertising_opt_out", 1), ("sensitive_data_processing", 8),
        ("known_child", 3), ("mspa_covered", 1), ("mspa_opt_out_mode", 1),
        ("mspa_service_provider_mode", 1),
    ),
}  # fmt: skip
NOT_OPTED_OUT = 2
OPTED_OUT = 1


def fibonacci(value: int) -> str:
    """Zeckendorf bits, F(2)=1 first, then the terminating "1"."""
    weights = [1, 2]
    while weights[-1] <= value:
        weights.append(weights[-1] + weights[-2])
    bits = ["0"] * len(weights)
    for index in range(len(weights) - 1, -1, -1):
        if weights[index] <= value:
            bits[index] = "1"
            value -= weights[index]
    return "".join(bits).rstrip("0") + "1"


def header(section_ids: Iterable[int]) -> str:
    """Type 3, Version 1, the ids as a Fibonacci range: consecutive ids as one range entry."""
    entries: list[tuple[int, int]] = []
    for section_id in sorted(section_ids):
        if entries and entries[-1][1] == section_id - 1:
            entries[-1] = (entries[-1][0], section_id)
        else:
            entries.append((section_id, section_id))
    bits = format(3, "06b") + format(1, "06b") + format(len(entries), "012b")
    previous = 0
    for start, end in entries:
        if start == end:
            bits += "0" + fibonacci(start - previous)
        else:
            bits += "1" + fibonacci(start - previous) + fibonacci(end - start)
        previous = end
    return base64_url(bits)


def decode_header(text: str) -> dict[str, object]:
    """The header encoder's inverse, for reading a real string by hand."""
    bits = decode_bits(text)
    offset = 24

    def read_fibonacci() -> int:
        nonlocal offset
        end = bits.index("11", offset) + 2
        weights, value = [1, 2], 0
        for bit in bits[offset : end - 1]:
            value += weights[0] * (bit == "1")
            weights = [weights[1], weights[0] + weights[1]]
        offset = end
        return value

    section_ids: list[int] = []
    for _ in range(int(bits[12:24], 2)):
        is_a_range = bits[offset] == "1"
        offset += 1
        start = read_fibonacci() + (section_ids[-1] if section_ids else 0)
        end = start + read_fibonacci() if is_a_range else start
        section_ids.extend(range(start, end + 1))
    return {"type": int(bits[:6], 2), "version": int(bits[6:12], 2), "section_ids": section_ids}


def us_section(section_id: int, *, version: int = 1, **values: int) -> str:
    """A core subsection with every notice given (1), no opt-out (2), MSPA covered (1);
    `values` overrides a field, a list field taking the value in every entry."""
    defaults = {"mspa_covered": 1, "mspa_opt_out_mode": 0, "mspa_service_provider_mode": 0}
    bits = format(version, "06b")
    for name, count in US_LAYOUTS[section_id]:
        default = 0 if name in ("sensitive_data_processing", "known_child") else NOT_OPTED_OUT
        if name.endswith("_notice"):
            default = 1
        value = values.pop(name, defaults.get(name, default))
        bits += format(value, "02b") * count
    assert not values, values
    return base64_url(bits)


def gpp_string(sections: dict[int, str]) -> str:
    return "~".join([header(sections), *(sections[key] for key in sorted(sections))])


CONSENTING_TC = tc_string(purposes=(1, 2, 3, 4, 7), vendors=(8, 9))
REFUSING_TC = tc_string(purposes=(1, 2))


def test_the_encoder_round_trips_ids_singly_and_as_ranges():
    for ids in ([2], [7, 8], [2, 6, 7, 8, 9, 10, 12], [1, 300, 301, 302, 5000]):
        assert decode_header(header(ids)) == {"type": 3, "version": 1, "section_ids": ids}
        section_ids = gpp._section_ids(Bits(header(ids)), len(ids))
        assert section_ids == ids


def test_tcfeuv2_answers_as_the_tc_string_does():
    consenting = gpp_string({2: CONSENTING_TC})
    refusing = gpp_string({2: REFUSING_TC})

    assert allows_targeted_ads(consenting, (2,)) is True
    assert allows_targeted_ads(consenting, (2,), vendor_id=8) is True
    assert allows_targeted_ads(consenting, (2,), vendor_id=10) is False
    assert allows_targeted_ads(refusing, (2,)) is False


@pytest.mark.parametrize(
    ("us_privacy", "expected"),
    [("1YNN", True), ("1NNY", True), ("1---", True), ("1YYN", False), ("1NYY", False),
     ("2YNN", False), ("1YN", False), ("1YXN", False), ("", False)],
)  # fmt: skip
def test_uspv1_refuses_an_opt_out_of_sale(us_privacy, expected):
    assert allows_targeted_ads(gpp_string({6: us_privacy}), (6,)) is expected


@pytest.mark.parametrize(
    ("targeted_advertising_opt_out", "expected"), [(2, True), (0, True), (1, False)]
)
def test_usnat_refuses_a_targeted_advertising_opt_out(targeted_advertising_opt_out, expected):
    section = us_section(7, targeted_advertising_opt_out=targeted_advertising_opt_out)

    assert allows_targeted_ads(gpp_string({7: section}), (7,)) is expected


@pytest.mark.parametrize("field", ["sale_opt_out", "sharing_opt_out"])
def test_usnat_refuses_an_opt_out_of_sale_or_sharing(field):
    section = us_section(7, **{field: OPTED_OUT})

    assert allows_targeted_ads(gpp_string({7: section}), (7,)) is False


def test_usnat_refuses_a_known_child_and_reads_past_a_gpc_subsection():
    child = us_section(7, known_child=2)
    with_gpc = us_section(7) + ".YA"

    assert allows_targeted_ads(gpp_string({7: child}), (7,)) is False
    assert allows_targeted_ads(gpp_string({7: with_gpc}), (7,)) is True


def test_usnat_strings_from_before_the_2024_update_are_read_at_their_own_offsets():
    """12 sensitive categories and 2 child entries: 60 bits, 11 characters."""
    fields = "000001" + "01" * 6 + "10" * 3 + "00" * 12
    allowed = base64_url(fields + "00" * 2 + "00" + "01" + "00" * 2)
    child = base64_url(fields + "01" + "00" + "00" + "01" + "00" * 2)

    assert len(allowed) == 11
    assert allows_targeted_ads(gpp_string({7: allowed}), (7,)) is True
    assert allows_targeted_ads(gpp_string({7: child}), (7,)) is False


@pytest.mark.parametrize(
    ("section_id", "fields", "expected"),
    [
        (8, {}, True),
        (8, {"sale_opt_out": OPTED_OUT}, False),
        (8, {"sharing_opt_out": OPTED_OUT}, False),
        (8, {"known_child": 1}, False),
        (9, {}, True),
        (9, {"targeted_advertising_opt_out": OPTED_OUT}, False),
        (9, {"sale_opt_out": OPTED_OUT}, False),
        (12, {}, True),
        (12, {"targeted_advertising_opt_out": OPTED_OUT}, False),
        (12, {"known_child": 2}, False),
        (9, {"version": 2}, False),
    ],
)
def test_state_sections_refuse_their_opt_outs(section_id, fields, expected):
    section = us_section(section_id, **fields)

    assert allows_targeted_ads(gpp_string({section_id: section}), (section_id,)) is expected


def test_every_applicable_section_must_allow():
    string = gpp_string({2: CONSENTING_TC, 6: "1YNN", 7: us_section(7, sale_opt_out=OPTED_OUT)})

    assert allows_targeted_ads(string, (2, 6)) is True
    assert allows_targeted_ads(string, (2, 6, 7)) is False


def test_sections_that_do_not_apply_are_ignored():
    string = gpp_string({2: REFUSING_TC, 6: "1YYN", 7: us_section(7)})

    assert allows_targeted_ads(string, (7,)) is True
    assert allows_targeted_ads(string, ()) is True
    assert allows_targeted_ads("garbage", ()) is True


def test_an_applicable_section_missing_from_the_string_refuses():
    assert allows_targeted_ads(gpp_string({7: us_section(7)}), (7, 8)) is False


def test_a_section_id_this_module_does_not_read_refuses():
    """tcfcav1 (5) and Florida (13) are well-formed but not decoded here."""
    string = gpp_string({5: "BPXxRfAPXxRfA", 13: us_section(9)})

    assert allows_targeted_ads(string, (5,)) is False
    assert allows_targeted_ads(string, (13,)) is False


@pytest.mark.parametrize(
    "string",
    [
        "",
        "~",
        "DBABMA",  # lists tcfeuv2 but carries no section
        header([6]) + "~1YNN~1YNN",  # more sections than ids
        base64_url("000100" + "000001" + "000000000001" + "011") + "~1YNN",  # Type 4
        base64_url("000011" + "000010" + "000000000001" + "011") + "~1YNN",  # Version 2
        base64_url("000011" + "000001" + "000000000001" + "0" + "0" * 40) + "~1YNN",  # no "11"
        base64_url("000011" + "000001" + "000000000001" + "1011" + "1" * 40) + "~1YNN",  # range
        "DBAB+A~1YNN",
        "DBABMA==~1YNN",
        "DBA~1YNN",  # cut short of NumEntries
        gpp_string({7: us_section(7)[:8]}),  # core cut short
        gpp_string({7: ""}),
        gpp_string({7: "us*nat"}),
    ],
)
def test_malformed_strings_refuse_without_raising(string):
    assert allows_targeted_ads(string, (6, 7)) is False


def test_malformed_arguments_refuse_without_raising():
    assert allows_targeted_ads(None, (7,)) is False  # type: ignore[arg-type]
    assert allows_targeted_ads(gpp_string({6: "1YNN"}), ("x",)) is False  # type: ignore[arg-type]
    assert allows_targeted_ads(gpp_string({6: "1YNN"}), [6]) is True  # type: ignore[arg-type]


def test_answers_are_cached_per_string_ids_and_vendor():
    gpp._allows.cache_clear()
    string = gpp_string({6: "1YNN"})

    allows_targeted_ads(string, (6,))
    allows_targeted_ads(string, (6,))
    allows_targeted_ads(string, (6,), vendor_id=8)

    info = gpp._allows.cache_info()
    assert (info.hits, info.misses, info.maxsize) == (1, 2, 4096)


def corpus_regs(name: str) -> dict[str, object]:
    request = json.loads((Path(CORPUS) / f"{name}.json").read_bytes())
    regs = request.get("regs") or {}
    ext = regs.get("ext") or {}  # the 2.5 extension's place, before 2.6 made them fields
    return {name: regs.get(name, ext.get(name)) for name in ("gpp", "gpp_sid")}


@pytest.mark.skipif(not CORPUS, reason="OPENRTB_CORPUS is not set")
def test_the_corpus_gpp_string_lists_only_tcfeuv2_so_its_us_sections_are_missing():
    """Prebid Server's eskimi fixture carries the GPP spec's example string (header "DBABMA":
    one section, tcfeuv2) with gpp_sid [7, 8]: usnat and usca apply but are absent."""
    regs = corpus_regs("prebid-server__eskimi-privacy-signals-gpp.request")
    string = regs["gpp"]
    assert isinstance(string, str)
    text_header, tc_section = string.split("~")

    assert regs["gpp_sid"] == [7, 8]
    assert decode_header(text_header) == {"type": 3, "version": 1, "section_ids": [2]}
    tc_fields = decode_tc_string(tc_section)
    assert {name: tc_fields[name] for name in ("version", "cmp_id", "purposes")} == {
        "version": 2,
        "cmp_id": 31,
        "purposes": [],
    }
    assert allows_targeted_ads(string, (7, 8)) is False
    assert allows_targeted_ads(string, (2,)) is False  # no purpose consented
    assert allows_targeted_ads(string, ()) is True


@pytest.mark.skipif(not CORPUS, reason="OPENRTB_CORPUS is not set")
def test_the_corpus_placeholder_gpp_strings_refuse():
    """Smaato's fixtures carry "gppString" in regs.ext: a header of Type 32, not 3."""
    names = (
        "prebid-server__smaato-simple-banner-eids-coppa.request",
        "prebid-server__smaato-video-pod-gdpr-gpp-dsa.request",
    )

    for name in names:
        regs = corpus_regs(name)
        assert regs == {"gpp": "gppString", "gpp_sid": [7]}
        assert decode_bits("gppString")[:6] == format(32, "06b")
        assert allows_targeted_ads("gppString", (7,)) is False
