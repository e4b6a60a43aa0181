import math
import random
from decimal import ROUND_DOWN, Decimal

import pytest

from bidding.pricing import (
    BASELINE_CTR,
    MAX_MULTIPLIER,
    MIN_MULTIPLIER,
    UnknownCurrency,
    bid_cpm,
    clear_floor,
    convert,
    response_currency,
)

RATES = {"EUR": Decimal("0.92"), "GBP": Decimal("0.79")}


def test_conversion_goes_through_usd_rates():
    assert convert(Decimal("9.2"), source="EUR", target="USD", usd_rates=RATES) == Decimal(10)
    assert convert(Decimal("10"), source="USD", target="GBP", usd_rates=RATES) == Decimal("7.9")
    assert convert(Decimal("0.92"), source="EUR", target="GBP", usd_rates=RATES) == Decimal(
        "0.79")
    with pytest.raises(UnknownCurrency, match="no exchange rate for JPY"):
        convert(Decimal(1), source="JPY", target="USD", usd_rates=RATES)


def test_the_response_currency_is_the_preferred_one_when_allowed():
    assert response_currency(["USD", "EUR"], preferred="EUR", usd_rates=RATES) == "EUR"
    assert response_currency(["JPY", "GBP"], preferred="EUR", usd_rates=RATES) == "GBP"
    assert response_currency(["JPY"], preferred="USD", usd_rates=RATES) is None


@pytest.mark.parametrize(("ctr", "expected"), [
    (0.005, Decimal("2.000")),   # baseline: the base CPM
    (0.010, Decimal("4.000")),   # twice as likely: twice the bid
    (0.050, Decimal("5.000")),   # capped at the max CPM
    (0.0001, Decimal("1.000")),  # never below half the base
])
def test_the_bid_scales_the_base_cpm_by_the_predicted_ctr(ctr, expected):
    assert bid_cpm(base_cpm=Decimal(2), max_cpm=Decimal(5), ctr=ctr) == expected


def test_a_loyalty_boost_raises_the_bid_within_the_max():
    assert bid_cpm(base_cpm=Decimal(2), max_cpm=Decimal(5), ctr=0.005,
                   boost=Decimal("1.3")) == Decimal("2.600")


def test_a_bid_below_the_floor_rises_to_it_only_within_the_max():
    assert clear_floor(Decimal("2.5"), Decimal("1.0"), Decimal(5)) == Decimal("2.5")
    assert clear_floor(Decimal("2.5"), Decimal("3.0001"), Decimal(5)) == Decimal("3.001")
    assert clear_floor(Decimal("2.5"), Decimal("6"), Decimal(5)) is None


def test_the_bid_multiplier_is_the_click_rate_over_the_baseline_bounded_exactly():
    """Bounds compared as floats, the ratio taken only between them: the same price as the
    ratio in Decimal for every score, at and beside the bounds too."""
    rng = random.Random(11)
    scores = [0.0, 1.0, 0.0025, 0.015, 0.005, *(rng.random() * 0.03 for _ in range(2000))]
    scores += [math.nextafter(bound, direction) for bound in (0.0025, 0.015)
               for direction in (0.0, 1.0)]
    for ctr in scores:
        for base, top in ((Decimal("2.35"), Decimal("9")), (Decimal("1"), Decimal("1.7"))):
            multiplier = min(max(Decimal(repr(ctr)) / BASELINE_CTR, MIN_MULTIPLIER),
                             MAX_MULTIPLIER)
            expected = min(base * multiplier, top).quantize(Decimal("0.001"), ROUND_DOWN)
            assert bid_cpm(base_cpm=base, max_cpm=top, ctr=ctr) == expected, ctr
