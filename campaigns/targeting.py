"""Vocabularies and validators for targeting and creative fields.

Values are stored as the bid path will match them: ISO 3166-1 alpha-3 countries and ISO 3166-2
regions (OpenRTB `geo.country` / `geo.region`), IAB content categories (`IAB1`, `IAB1-2`),
lower-case domains and bundles. Changing a vocabulary changes what the snapshot compiler emits.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from functools import cache

import pycountry
from django.core.exceptions import ValidationError
from django.utils.deconstruct import deconstructible

DEVICE_TYPES = ("mobile", "desktop", "ctv", "phone", "tablet", "connected_device",
                "set_top_box", "ooh")
OPERATING_SYSTEMS = ("ios", "android", "windows", "macos", "linux", "chromeos", "tvos",
                     "roku", "tizen", "webos", "fireos", "other")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_IAB_CATEGORY = re.compile(r"^IAB\d{1,2}(-\d{1,2})?$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_BUNDLE = re.compile(r"^([a-z0-9_]+(\.[a-z0-9_-]+)+|\d{6,12})$", re.IGNORECASE)
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")
_MIME = re.compile(r"^[a-z]+/[a-z0-9][a-z0-9.+-]*$")
_SIZE = re.compile(r"^(\d{1,4})x(\d{1,4})$")


@cache
def _countries() -> frozenset[str]:
    return frozenset(country.alpha_3 for country in pycountry.countries)


@cache
def _regions() -> frozenset[str]:
    return frozenset(subdivision.code for subdivision in pycountry.subdivisions)


@cache
def _currencies() -> frozenset[str]:
    return frozenset(currency.alpha_3 for currency in pycountry.currencies)


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _check_list(values: object, *, valid, what: str) -> None:
    if not isinstance(values, list):
        raise ValidationError("Enter a list of values.", code="invalid_value")
    bad = [str(value) for value in values if not isinstance(value, str) or not valid(value)]
    if bad:
        raise ValidationError(f"Not a valid {what}: {', '.join(bad)}.", code="invalid_value")
    if len(set(values)) != len(values):
        raise ValidationError("Remove the duplicate values.", code="duplicate")


def validate_countries(values: object) -> None:
    _check_list(values, valid=_countries().__contains__, what="ISO 3166-1 alpha-3 country code")


def validate_regions(values: object) -> None:
    _check_list(values, valid=_regions().__contains__, what="ISO 3166-2 region code")


def validate_device_types(values: object) -> None:
    _check_list(values, valid=DEVICE_TYPES.__contains__,
                what=f"device type (one of {', '.join(DEVICE_TYPES)})")


def validate_operating_systems(values: object) -> None:
    _check_list(values, valid=OPERATING_SYSTEMS.__contains__,
                what=f"operating system (one of {', '.join(OPERATING_SYSTEMS)})")


def validate_domains(values: object) -> None:
    _check_list(values, valid=lambda v: bool(_DOMAIN.match(v)), what="lower-case domain")


def validate_bundles(values: object) -> None:
    _check_list(values, valid=lambda v: bool(_BUNDLE.match(v)), what="app bundle or store id")


def validate_categories(values: object) -> None:
    _check_list(values, valid=lambda v: bool(_IAB_CATEGORY.match(v)),
                what="IAB content category (IAB1, IAB1-2, ...)")


def validate_tokens(values: object) -> None:
    _check_list(values, valid=lambda v: bool(_TOKEN.match(v)),
                what="identifier (letters, digits, . _ : -)")


def validate_mimes(values: object) -> None:
    _check_list(values, valid=lambda v: bool(_MIME.match(v)), what="MIME type (video/mp4)")


def validate_sizes(values: object) -> None:
    def valid(value: str) -> bool:
        match = _SIZE.match(value)
        return bool(match) and int(match[1]) > 0 and int(match[2]) > 0

    _check_list(values, valid=valid, what="size (WIDTHxHEIGHT, e.g. 300x250)")


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        return None


def validate_networks(values: object) -> None:
    """IPv4 or IPv6 networks in CIDR form, without host bits set (``10.0.0.0/8``)."""
    _check_list(values, valid=lambda v: _network(v) is not None,
                what="network in CIDR form (10.0.0.0/8, 2001:db8::/32)")


def normalize_networks(values: list[str]) -> list[str]:
    """The canonical text of each network, so ``2001:DB8::/32`` and ``2001:db8::/32`` are one."""
    return [str(ipaddress.ip_network(value, strict=True)) for value in values]


@deconstructible
class IntListValidator:
    """Every item a whole number in [low, high]; for OpenRTB enumerations."""

    def __init__(self, low: int, high: int, what: str) -> None:
        self.low, self.high, self.what = low, high, what

    def __call__(self, values: object) -> None:
        _check_list_ints(values, self.low, self.high, self.what)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IntListValidator) and (
            (self.low, self.high, self.what) == (other.low, other.high, other.what))


def _check_list_ints(values: object, low: int, high: int, what: str) -> None:
    if not isinstance(values, list):
        raise ValidationError("Enter a list of numbers.", code="invalid_value")
    bad = [str(v) for v in values if not isinstance(v, int) or isinstance(v, bool)
           or not low <= v <= high]
    if bad:
        raise ValidationError(f"Not a valid {what} ({low}-{high}): {', '.join(bad)}.",
                              code="invalid_value")


def validate_currency(value: str) -> None:
    if value not in _currencies():
        raise ValidationError(f"{value!r} is not an ISO 4217 currency code.", code="invalid_value")


def validate_time_zone(value: str) -> None:
    if value not in _time_zones():
        raise ValidationError(f"{value!r} is not an IANA time zone.", code="invalid_value")


def validate_dayparts(value: object) -> None:
    """Dayparts map weekday names to the hours (0-23) a campaign runs; empty means always."""
    if not isinstance(value, dict):
        raise ValidationError("Enter weekdays mapped to lists of hours.", code="invalid_value")
    for day, hours in value.items():
        if day not in WEEKDAYS:
            raise ValidationError(f"{day!r} is not a weekday ({', '.join(WEEKDAYS)}).",
                                  code="invalid_value")
        _check_list_ints(hours, 0, 23, f"hour for {day}")
        if not hours:
            raise ValidationError(f"{day} has no hours; leave the day out instead.",
                                  code="invalid_value")


def parse_dayparts(text: str) -> dict[str, list[int]]:
    """Parse the admin's readable form: ``mon-fri 9-17; sat 10-14`` (end hour exclusive)."""
    result: dict[str, list[int]] = {}
    for part in (p.strip() for p in text.replace("\n", ";").split(";") if p.strip()):
        days_text, _, hours_text = part.partition(" ")
        days = _span(days_text.strip().lower(), WEEKDAYS, "weekday")
        hours: list[int] = []
        for hour_span in (h.strip() for h in hours_text.split(",") if h.strip()):
            start_text, dash, end_text = hour_span.partition("-")
            if not (start_text.isdigit() and (not dash or end_text.isdigit())):
                raise ValidationError(f"{hour_span!r} is not an hour range like 9-17.",
                                      code="invalid_value")
            start = int(start_text)
            end = int(end_text) if dash else start + 1
            if not 0 <= start < end <= 24:
                raise ValidationError(f"{hour_span!r}: hours run from 0 to 24.",
                                      code="invalid_value")
            hours.extend(range(start, end))
        if not hours:
            raise ValidationError(f"{part!r} needs hours, like 'mon-fri 9-17'.",
                                  code="invalid_value")
        for day in days:
            result[day] = sorted(set(result.get(day, [])) | set(hours))
    return result


def format_dayparts(value: dict[str, list[int]]) -> str:
    parts = []
    for day in WEEKDAYS:
        if day in value:
            parts.append(f"{day} {','.join(_ranges(value[day]))}")
    return "; ".join(parts)


def _span(text: str, names: tuple[str, ...], what: str) -> list[str]:
    first, dash, last = text.partition("-")
    if first not in names or (dash and last not in names):
        raise ValidationError(f"{text!r} is not a {what} or range like mon-fri.",
                              code="invalid_value")
    start, end = names.index(first), names.index(last if dash else first)
    if end < start:
        raise ValidationError(f"{text!r} runs backwards.", code="invalid_value")
    return list(names[start:end + 1])


def _ranges(hours: list[int]) -> list[str]:
    spans: list[str] = []
    start = previous = None
    for hour in sorted(hours) + [None]:
        if start is not None and hour != previous + 1:
            spans.append(f"{start}-{previous + 1}")
            start = None
        if start is None and hour is not None:
            start = hour
        previous = hour
    return spans
