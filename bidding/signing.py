"""Signed URLs for notices, clicks and tracking: what we put in, an exchange cannot change.

A URL's own fields (auction, imp, bid, campaign, creative, exchange, ...) are covered by an
HMAC-SHA256 with the platform's secret key; the values the exchange fills in through macros
(`${AUCTION_PRICE}`, `${AUCTION_LOSS}`, ...) are not, and are checked on their own. A forged
or altered URL fails `verify` and counts nothing.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

if TYPE_CHECKING:
    from _hashlib import HASH

SIGNATURE_FIELD = "sig"


def _body(fields: Mapping[str, str]) -> str:
    """What the signature covers besides the purpose: the fields sorted by name."""
    return "\n".join(f"{key}={fields[key]}" for key in sorted(fields))


def _signature(secret: bytes, purpose: str, body: str) -> str:
    """The ``sig`` a URL carries: the first 32 hex digits of the HMAC-SHA256 of the purpose
    and the fields (``body``, from `_body`)."""
    return hmac_sha256(secret, (purpose + "\n" + body).encode()).hex()[:32]


def signed_query(secret: bytes, purpose: str, fields: Mapping[str, str],
                 macros: Mapping[str, str] | None = None) -> str:
    """``fields`` signed for ``purpose``; ``macros`` appended unsigned and unescaped, so the
    exchange can substitute them (``{"price": "${AUCTION_PRICE}"}``)."""
    return Signer(secret, fields).query(purpose, macros)


# What urlencode leaves as it is; most values (ids, digits, hashes) are made only of these.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def _encoded(fields: Mapping[str, str]) -> str:
    """``urlencode(fields)``, quoting only what needs it (our field names never do)."""
    return "&".join(f"{key if _PLAIN.fullmatch(key) else _quoted(key)}="
                    f"{value if _PLAIN.fullmatch(value) else _quoted(value)}"
                    for key, value in fields.items())


@lru_cache(maxsize=1024)
def _quoted(value: str) -> str:
    """``quote_plus(value)``, remembered: the values that need quoting are mostly the few
    time zones of the campaigns (``America/New_York``), on every bid."""
    return quote_plus(value)


@lru_cache(maxsize=8)
def _pads(secret: bytes) -> tuple[HASH, HASH]:
    """SHA-256 states that have absorbed the key's inner and outer pads (RFC 2104, section
    4): set up once per secret, each HMAC then costs two state copies and no key work
    (`hmac.new(...).copy()` and `hmac.digest` redo some of it at every call)."""
    key = hashlib.sha256(secret).digest() if len(secret) > 64 else secret
    key = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(byte ^ 0x36 for byte in key)),
            hashlib.sha256(bytes(byte ^ 0x5C for byte in key)))


def hmac_sha256(secret: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message``, equal to ``hmac.digest(secret, message, "sha256")``."""
    inner, outer = _pads(secret)
    inner, outer = inner.copy(), outer.copy()
    inner.update(message)
    outer.update(inner.digest())
    return outer.digest()


class Signer:
    """The same fields signed for several purposes (a bid's notice, click and tracking URLs):
    the fields are encoded and sorted once; only the purpose and the signature differ."""

    def __init__(self, secret: bytes, fields: Mapping[str, str]) -> None:
        self._secret = secret
        self._body = _body(fields)
        self._encoded = _encoded(fields)

    def query(self, purpose: str, macros: Mapping[str, str] | None = None) -> str:
        signature = _signature(self._secret, purpose, self._body)
        query = f"{self._encoded}&{SIGNATURE_FIELD}={signature}"
        if macros:
            query += "&" + "&".join(f"{key}={value}" for key, value in macros.items())
        return query


def verify(secret: bytes, purpose: str, query: Mapping[str, str],
           signed_fields: tuple[str, ...]) -> bool:
    """True when ``query`` carries every signed field and a matching signature.

    A signed value holding a newline is refused: the signed body joins ``key=value`` lines
    with newlines, so such a value could carry text from one field into the next (auction
    ``r1\nbid=x`` and bid ``b`` sign as auction ``r1`` and bid ``x\nbid=b``). Our own
    values never hold one; an exchange's ids are refused before they are signed."""
    if any(field not in query for field in signed_fields):
        return False
    fields = {field: query[field] for field in signed_fields}
    if any("\n" in value for value in fields.values()):
        return False
    return hmac.compare_digest(_signature(secret, purpose, _body(fields)),
                               query.get(SIGNATURE_FIELD, ""))
