"""The OpenRTB 2.6 bid response (§4.2): structs, the encoder, and the no-bid body.

Prices are `Decimal` from pricing to the wire: the encoder writes them as JSON numbers
(msgspec's `decimal_format="number"`), rounded down to 4 decimal places so a bid never goes
out above the price pricing chose, and without trailing zeros (`1.2`, not `1.2000`). Fields
at their default (`cur` "USD", `group` 0, anything unset) are omitted, which is what the spec
means by a default and keeps the body small.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal
from typing import Any

import msgspec

PRICE_QUANTUM = Decimal("0.0001")


class InvalidResponse(ValueError):
    """A partner's body is not an OpenRTB bid response we can read."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Bid(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    id: str
    impid: str
    price: Decimal  # CPM in the response's `cur`
    nurl: str | None = None
    burl: str | None = None
    lurl: str | None = None
    # Always a string from us; some partners send a native response as an object.
    adm: str | dict[str, Any] | None = None
    adid: str | None = None
    adomain: list[str] | None = None
    bundle: str | None = None
    iurl: str | None = None
    cid: str | None = None
    crid: str | None = None
    tactic: str | None = None
    cattax: int | None = None
    cat: list[str] | None = None
    attr: list[int] | None = None
    apis: list[int] | None = None
    protocol: int | None = None
    qagmediarating: int | None = None
    language: str | None = None
    langb: str | None = None
    dealid: str | None = None
    w: int | None = None
    h: int | None = None
    wratio: int | None = None
    hratio: int | None = None
    exp: int | None = None
    dur: int | None = None
    mtype: int | None = None
    slotinpod: int | None = None
    ext: dict[str, Any] | None = None


class SeatBid(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    bid: list[Bid]
    seat: str | None = None
    group: int = 0
    ext: dict[str, Any] | None = None


class BidResponse(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    # Required by the spec; defaulted so a partner's reply without it still decodes (one
    # corpus response has none). Our own responses always carry the request id.
    id: str = ""
    seatbid: list[SeatBid] = msgspec.field(default_factory=list)
    bidid: str | None = None
    cur: str | None = None  # absent means USD (§4.2); ours always say which
    customdata: str | None = None
    nbr: int | None = None
    ext: dict[str, Any] | None = None


_ENCODER = msgspec.json.Encoder(decimal_format="number")
_DECODER = msgspec.json.Decoder(BidResponse, strict=False)


def wire_price(price: Decimal) -> Decimal:
    """The price as it goes on the wire: at most 4 decimals, rounded down, no trailing zeros."""
    if not price.is_finite() or price < 0:
        raise ValueError(f"a bid price must be a finite, non-negative amount, not {price}")
    rounded = price.quantize(PRICE_QUANTUM, rounding=ROUND_DOWN).normalize()
    exponent = rounded.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:  # normalize() wrote 10 as 1E+1
        rounded = rounded.quantize(Decimal(1))
    return rounded


def encode_response(response: BidResponse) -> bytes:
    """The JSON body for `response`, prices written by `wire_price`; `response` is unchanged."""
    seats = [msgspec.structs.replace(
        seat, bid=[msgspec.structs.replace(bid, price=wire_price(bid.price)) for bid in seat.bid])
        for seat in response.seatbid]
    return _ENCODER.encode(msgspec.structs.replace(response, seatbid=seats))


def no_bid_body(request_id: str, nbr: int) -> bytes:
    """`{"id": ..., "nbr": N}`: a no-bid with its reason code (§4.2.1, *impl* §7.1)."""
    return _ENCODER.encode(BidResponse(id=request_id, nbr=int(nbr)))


def decode_response(body: bytes) -> BidResponse:
    """Decode a partner's bid response, or raise `InvalidResponse` with the reason."""
    try:
        return _DECODER.decode(body)
    except msgspec.ValidationError as error:
        raise InvalidResponse(f"not a bid response: {error}") from None
    except msgspec.DecodeError as error:
        raise InvalidResponse(f"invalid JSON: {error}") from None
    except RecursionError:
        raise InvalidResponse("invalid JSON: nested too deeply") from None
