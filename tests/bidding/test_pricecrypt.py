import base64
from decimal import Decimal

import pytest

from bidding.pricecrypt import PriceDecryptionError, decrypt_doubleclick, decrypt_price

# The example of Google's "Decrypt price confirmations" guide.
ENCRYPTION_KEY = "skU7Ax_NL5pPAFyKdkfZjZz2-VhIN8bjj1rVFOaJ_5o="
INTEGRITY_KEY = "arO23ykdNqUQ5LEoQ0FVmPkBd7xB5CO89PDZlSjpFxo="
TOKEN = "YWJjMTIzZGVmNDU2Z2hpN7fhCuPemCce_6msaw"


def test_the_published_example_decrypts_to_100_micros(monkeypatch):
    monkeypatch.setenv("ADX_PRICE_KEYS", f"{ENCRYPTION_KEY},{INTEGRITY_KEY}")
    assert decrypt_price("doubleclick", TOKEN, key_ref="ADX_PRICE_KEYS") == Decimal("0.0001")


@pytest.mark.parametrize("token", [TOKEN[:-2] + "AA", TOKEN[:10], "!!!"])
def test_a_tampered_or_malformed_price_is_refused(token):
    with pytest.raises(PriceDecryptionError):
        decrypt_doubleclick(token, encryption_key=base64.urlsafe_b64decode(ENCRYPTION_KEY),
                            integrity_key=base64.urlsafe_b64decode(INTEGRITY_KEY))


def test_missing_keys_or_an_unknown_hook_are_refused(monkeypatch):
    monkeypatch.delenv("ADX_PRICE_KEYS", raising=False)
    with pytest.raises(PriceDecryptionError, match="ADX_PRICE_KEYS must hold"):
        decrypt_price("doubleclick", TOKEN, key_ref="ADX_PRICE_KEYS")
    with pytest.raises(PriceDecryptionError, match="no decryption hook 'rot13'"):
        decrypt_price("rot13", TOKEN, key_ref="ADX_PRICE_KEYS")
