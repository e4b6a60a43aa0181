"""Our vocabularies for what senders write freely: device types, OS names, countries,
regions and domains. The snapshot's targeting uses the same words, so a change here changes
which campaigns match.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pycountry

# AdCOM 1.0 "Device Types"; a code not listed here (a later AdCOM addition) becomes "".
DEVICE_TYPES = {
    1: "mobile",  # mobile/tablet, the 2.x "general" code
    2: "desktop",  # personal computer
    3: "ctv",
    4: "phone",
    5: "tablet",
    6: "connected_device",
    7: "set_top_box",
    8: "ooh",
}

# Device OS names as senders write them, squeezed to lower-case letters and digits.
_OS_NAMES = {
    "ios": "ios", "iphoneos": "ios", "ipados": "ios", "iphone": "ios", "ipad": "ios",
    "android": "android",
    "windows": "windows", "win": "windows", "windowsphone": "windows", "windowsmobile": "windows",
    "macos": "macos", "macosx": "macos", "osx": "macos", "mac": "macos", "darwin": "macos",
    "linux": "linux", "ubuntu": "linux",
    "chromeos": "chromeos", "cros": "chromeos",
    "tvos": "tvos",
    "roku": "roku", "rokuos": "roku",
    "tizen": "tizen",
    "webos": "webos",
    "fireos": "fireos", "amazonfireos": "fireos", "firetv": "fireos",
}
_OS_PREFIXES = (("windows", "windows"), ("macos", "macos"), ("android", "android"),
                ("ios", "ios"), ("linux", "linux"), ("fireos", "fireos"))

ALPHA2_BY_ALPHA3: dict[str, str] = {country.alpha_3: country.alpha_2
                                    for country in pycountry.countries}
ALPHA3_BY_ALPHA2: dict[str, str] = {alpha2: alpha3
                                    for alpha3, alpha2 in ALPHA2_BY_ALPHA3.items()}
ALPHA3_BY_ALPHA2["UK"] = "GBR"  # not ISO, but senders use it

def os_name(value: str) -> str:
    squeezed = "".join(character for character in value.lower() if character.isalnum())
    if not squeezed:
        return ""
    known = _OS_NAMES.get(squeezed)
    if known is not None:
        return known
    for prefix, name in _OS_PREFIXES:
        if squeezed.startswith(prefix):
            return name
    return "other"


def country_code(value: str | None) -> str:
    """ISO 3166-1 alpha-3, upper-cased; an alpha-2 code some senders use is converted."""
    country = (value or "").strip().upper()
    if len(country) == 2:
        return ALPHA3_BY_ALPHA2.get(country, country)
    return country


def region_code(value: str | None, country: str) -> str:
    """ISO 3166-2 ("US-CA") from a subdivision code and the country.

    A region already prefixed ("US-MA") is kept; a code of 1-3 letters or digits is prefixed
    with the country's alpha-2; anything else (a name such as "New York", or a code without a
    country) is returned upper-cased as given.
    """
    region = (value or "").strip().upper()
    if not region or "-" in region:
        return region
    alpha2 = ALPHA2_BY_ALPHA3.get(country, "")
    if alpha2 and len(region) <= 3 and region.isalnum():
        return f"{alpha2}-{region}"
    return region


def domain_name(value: str | None) -> str:
    """A host, lower-cased and without "www."; a URL (site.page) gives its host."""
    domain = (value or "").strip().lower()
    if "://" in domain:
        try:
            domain = urlsplit(domain).hostname or ""
        except ValueError:
            return ""
    domain = domain.rstrip(".")
    return domain.removeprefix("www.")
