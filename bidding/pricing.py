"""Prices and currencies: Decimal all the way, rounded to a tenth of a cent CPM.

The bid for a candidate is its campaign's base CPM scaled by how much more (or less) likely
the model says a click is than the baseline, times any loyalty boost, never above the
campaign's maximum CPM. Floors come in the exchange's currencies and are converted with the
rates ops keep in the snapshot (units per 1 USD).

Django-free: the bidder imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_DOWN, ROUND_UP, Decimal

# The click-through rate at which a campaign bids exactly its base CPM.
BASELINE_CTR = Decimal("0.005")
# How far the model may move a bid from the base CPM, down and up.
MIN_MULTIPLIER, MAX_MULTIPLIER = Decimal("0.5"), Decimal("3")
CPM_STEP = Decimal("0.001")


class UnknownCurrency(ValueError):
    pass


def convert(amount: Decimal, *, source: str, target: str,
            usd_rates: Mapping[str, Decimal]) -> Decimal:
    """``amount`` of ``source`` in ``target``; raises UnknownCurrency without a rate."""
    if source == target:
        return amount
    rates = {"USD": Decimal(1), **usd_rates}
    if source not in rates or target not in rates:
        missing = source if source not in rates else target
        raise UnknownCurrency(f"no exchange rate for {missing}")
    return amount / rates[source] * rates[target]


def response_currency(allowed: Sequence[str], *, preferred: str,
                      usd_rates: Mapping[str, Decimal]) -> str | None:
    """The currency to bid in: the preferred one if the request allows it, else the first
    allowed one we have a rate for."""
    known = {"USD", *usd_rates}
    if preferred in allowed and preferred in known:
        return preferred
    return next((currency for currency in allowed if currency in known), None)


# The click-through rates at which the multiplier reaches its bounds, as floats: a float
# compares with them as its shortest decimal form (the `repr` below) compares with theirs.
_MIN_CTR = float(BASELINE_CTR * MIN_MULTIPLIER)
_MAX_CTR = float(BASELINE_CTR * MAX_MULTIPLIER)
_PER_BASELINE = 1 / BASELINE_CTR  # 200, exactly: multiplying by it is dividing by 0.005


def bid_cpm(*, base_cpm: Decimal, max_cpm: Decimal, ctr: float,
            boost: Decimal = Decimal(1)) -> Decimal:
    # ctr / BASELINE_CTR bounded to [MIN_MULTIPLIER, MAX_MULTIPLIER], worked out in Decimal
    # only when it falls between them (most model scores fall below or between).
    if ctr <= _MIN_CTR:
        multiplier = MIN_MULTIPLIER
    elif ctr >= _MAX_CTR:
        multiplier = MAX_MULTIPLIER
    else:
        multiplier = Decimal(repr(ctr)) * _PER_BASELINE
    price = base_cpm * multiplier
    if boost != 1:  # times exactly 1 changes neither value nor exponent: skipped per offer
        price *= boost
    return min(price, max_cpm).quantize(CPM_STEP, ROUND_DOWN)


def clear_floor(price: Decimal, floor: Decimal, max_cpm: Decimal) -> Decimal | None:
    """The price that meets ``floor``: the bid itself (``price``, a multiple of CPM_STEP),
    or the floor rounded up to one when the bid is below it and the campaign may pay that
    much; None when it may not."""
    if price >= floor:
        return price
    return agreed_price(floor, max_cpm)


def agreed_price(floor: Decimal, max_cpm: Decimal) -> Decimal | None:
    """``floor`` rounded up to a multiple of CPM_STEP, so that the price on the wire is never
    below it; None when that is more than ``max_cpm`` (compared first: a floor of 1e30
    cannot be rounded at all)."""
    if floor > max_cpm:
        return None
    floor = floor.quantize(CPM_STEP, ROUND_UP)
    return floor if floor <= max_cpm else None


def round_down(price: Decimal) -> Decimal:
    """A converted amount as a multiple of CPM_STEP, never above itself."""
    return price.quantize(CPM_STEP, ROUND_DOWN)
