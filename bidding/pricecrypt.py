"""Decryption hooks for prices exchanges encrypt into `${AUCTION_PRICE}`.

An exchange record names its hook (`ExchangeEntry.price_decryption`) and the environment
variable holding its keys (`price_key_ref`); the keys never enter the snapshot. A price that
fails its integrity check is refused (no spend counted), as a forged one must be.

`doubleclick`: Google's scheme, also used by other exchanges. The 28 bytes of the web-safe
base64 token are an initialization vector (16), the price XOR-ed with the first 8 bytes of
HMAC-SHA1(encryption key, iv), and the first 4 bytes of HMAC-SHA1(integrity key, price + iv).
The price is CPM micros. The keys variable holds the two web-safe base64 keys, encryption
first, separated by a comma.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from decimal import Decimal


class PriceDecryptionError(ValueError):
    pass


def _websafe_b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as error:
        raise PriceDecryptionError(f"not web-safe base64: {error}") from error


def decrypt_doubleclick(token: str, *, encryption_key: bytes, integrity_key: bytes) -> int:
    """The CPM micros in ``token``; raises PriceDecryptionError when it does not verify."""
    data = _websafe_b64decode(token)
    if len(data) != 28:
        raise PriceDecryptionError(f"an encrypted price is 28 bytes, got {len(data)}")
    iv, ciphertext, signature = data[:16], data[16:24], data[24:]
    pad = hmac.new(encryption_key, iv, hashlib.sha1).digest()[:8]
    price = bytes(left ^ right for left, right in zip(ciphertext, pad, strict=True))
    check = hmac.new(integrity_key, price + iv, hashlib.sha1).digest()[:4]
    if not hmac.compare_digest(check, signature):
        raise PriceDecryptionError("the encrypted price fails its integrity check")
    return int.from_bytes(price, "big")


def decrypt_price(hook: str, token: str, *, key_ref: str) -> Decimal:
    """The clearing CPM an exchange encrypted with ``hook``, keys read from ``key_ref``."""
    if hook != "doubleclick":
        raise PriceDecryptionError(f"no decryption hook {hook!r}")
    keys = os.environ.get(key_ref, "")
    encryption, _, integrity = keys.partition(",")
    if not encryption or not integrity:
        raise PriceDecryptionError(f"{key_ref} must hold the encryption and integrity keys, "
                                   "web-safe base64, separated by a comma")
    micros = decrypt_doubleclick(token, encryption_key=_websafe_b64decode(encryption.strip()),
                                 integrity_key=_websafe_b64decode(integrity.strip()))
    return Decimal(micros) / 1_000_000
