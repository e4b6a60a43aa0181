"""A base64url segment read as bits, big-endian, as the IAB consent strings are written
(`bidding.openrtb.tcf`, `bidding.openrtb.gpp`).

Django-free: the bidder imports it.
"""

from __future__ import annotations

import base64
import re

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class Malformed(Exception):
    """Not a segment of the string its reader expects; the decoders answer False."""


class Bits:
    """The sextets of one base64url segment (no padding) as one big-endian integer of
    `length` bits."""

    __slots__ = ("_value", "length")

    def __init__(self, segment: str) -> None:
        if not _BASE64URL.fullmatch(segment):
            raise Malformed
        padding = -len(segment) % 4  # "A" sextets are zeros: they keep every bit in place
        data = base64.urlsafe_b64decode(segment + "A" * padding)
        self._value = int.from_bytes(data, "big") >> (6 * padding)
        self.length = len(segment) * 6

    def require(self, end: int) -> None:
        """Refuses a segment shorter than `end` bits."""
        if end > self.length:
            raise Malformed

    def read(self, offset: int, width: int) -> int:
        self.require(offset + width)
        return (self._value >> (self.length - offset - width)) & ((1 << width) - 1)
