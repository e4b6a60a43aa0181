import hmac
from urllib.parse import parse_qsl

import pytest

from bidding.signing import hmac_sha256, signed_query, verify

SECRET = b"k" * 32
FIELDS = ("auction", "imp", "bid", "campaign")


def parse(query: str) -> dict[str, str]:
    return dict(parse_qsl(query, keep_blank_values=True))


def signed() -> str:
    return signed_query(SECRET, "win", {"auction": "a-1", "imp": "1", "bid": "b-9",
                                        "campaign": "42"},
                        {"price": "${AUCTION_PRICE}", "cur": "${AUCTION_CURRENCY}"})


def test_a_signed_query_keeps_macros_unescaped_for_the_exchange():
    assert signed().endswith("&price=${AUCTION_PRICE}&cur=${AUCTION_CURRENCY}")


def test_the_signature_verifies_after_the_exchange_fills_the_macros():
    query = signed().replace("${AUCTION_PRICE}", "1.25").replace("${AUCTION_CURRENCY}", "USD")
    assert verify(SECRET, "win", parse(query), FIELDS)


def test_an_altered_field_another_purpose_or_key_or_a_missing_field_fails():
    query = parse(signed())
    assert not verify(SECRET, "win", {**query, "campaign": "43"}, FIELDS)
    assert not verify(SECRET, "billing", query, FIELDS)
    assert not verify(b"x" * 32, "win", query, FIELDS)
    assert not verify(SECRET, "win", {k: v for k, v in query.items() if k != "bid"}, FIELDS)
    assert not verify(SECRET, "win", {k: v for k, v in query.items() if k != "sig"}, FIELDS)


@pytest.mark.parametrize("secret", [b"", b"short", b"k" * 64, b"long" * 40],
                         ids=["empty", "short", "block", "longer-than-a-block"])
def test_the_precomputed_hmac_is_hmac_sha256(secret):
    for message in (b"", b"win\nauction=1", b"x" * 1000):
        assert hmac_sha256(secret, message) == hmac.digest(secret, message, "sha256")


def test_a_newline_in_a_signed_value_is_refused_so_no_text_moves_between_fields():
    # An exchange's auction id "r1\nbid=x" signs the same body as auction "r1" with bid
    # "x\nbid=<the bid>": each would verify the other's signature.
    query = parse(signed_query(SECRET, "billing", {"auction": "r1\nbid=x", "imp": "1",
                                                   "bid": "b-9", "campaign": "42"}))
    moved = {**query, "auction": "r1", "bid": "x\nbid=b-9"}

    assert not verify(SECRET, "billing", query, FIELDS)
    assert not verify(SECRET, "billing", moved, FIELDS)
    assert verify(SECRET, "billing", parse(signed_query(SECRET, "billing", {
        "auction": "r1 bid=x", "imp": "1", "bid": "b-9", "campaign": "42"})), FIELDS)
