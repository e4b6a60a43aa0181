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
from urllib.parse import quote_plus

SIGNATURE_FIELD = "sig"


def _body(fields: Mapping[str, str]) -> str:
    """What the signature covers besides the purpose: the fields sorted by name."""
    return "\n".join(f"{key}={fields[key]}" for key in sorted(fields))


def _digest(secret: bytes, purpose: str, fields: Mapping[str, str]) -> str:
    message = purpose + "\n" + _body(fields)
    return hmac.new(secret, message.encode(), hashlib.sha256).hexdigest()[:32]


def signed_query(secret: bytes, purpose: str, fields: Mapping[str, str],
                 macros: Mapping[str, str] | None = None) -> str:
    """``fields`` signed for ``purpose``; ``macros`` appended unsigned and unescaped, so the
    exchange can substitute them (``{"price": "${AUCTION_PRICE}"}``)."""
    return Signer(secret, fields).query(purpose, macros)


# What urlencode leaves as it is; most values (ids, digits, hashes) are made only of these.
_PLAIN = re.compile(r"[A-Za-z0-9_.~-]*")


def _encoded(fields: Mapping[str, str]) -> str:
    """``urlencode(fields)``, quoting only what needs it (our field names never do)."""
    return "&".join(f"{key if _PLAIN.fullmatch(key) else quote_plus(key)}="
                    f"{value if _PLAIN.fullmatch(value) else quote_plus(value)}"
                    for key, value in fields.items())


class Signer:
    """The same fields signed for several purposes (a bid's notice, click and tracking URLs):
    the fields are encoded and sorted once; only the purpose and the signature differ, each
    signature one call into OpenSSL (`hmac.digest`)."""

    def __init__(self, secret: bytes, fields: Mapping[str, str]) -> None:
        self._secret = secret
        self._body = "\n" + _body(fields)
        self._encoded = _encoded(fields)

    def query(self, purpose: str, macros: Mapping[str, str] | None = None) -> str:
        signature = hmac.digest(self._secret, (purpose + self._body).encode(), "sha256")
        query = f"{self._encoded}&{SIGNATURE_FIELD}={signature.hex()[:32]}"
        if macros:
            query += "&" + "&".join(f"{key}={value}" for key, value in macros.items())
        return query


def verify(secret: bytes, purpose: str, query: Mapping[str, str],
           signed_fields: tuple[str, ...]) -> bool:
    """True when ``query`` carries every signed field and a matching signature."""
    if any(field not in query for field in signed_fields):
        return False
    fields = {field: query[field] for field in signed_fields}
    return hmac.compare_digest(_digest(secret, purpose, fields),
                               query.get(SIGNATURE_FIELD, ""))
