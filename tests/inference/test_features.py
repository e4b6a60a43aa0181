"""The feature schema and builder shared by training and the bid path."""

from __future__ import annotations

import math
import re

import numpy as np

from campaigns import targeting
from campaigns.models import Creative
from inference import features
from inference.features import (
    FEATURE_COUNT,
    FEATURE_NAMES,
    INPUT_NAME,
    OUTPUT_NAME,
    OUTPUTS,
    SCHEMA_VERSION,
    ContextFeatures,
    OfferFeatures,
    UserFeatures,
    build_matrix,
    build_matrix_picked,
    build_row,
    encode_offers,
)


def _expected(values: dict[str, float]) -> np.ndarray:
    row = np.zeros(FEATURE_COUNT, dtype=np.float32)
    for name, value in values.items():
        row[FEATURE_NAMES.index(name)] = value
    return row


def test_schema_constants():
    assert SCHEMA_VERSION == 1
    assert FEATURE_COUNT == 74
    assert len(FEATURE_NAMES) == FEATURE_COUNT
    assert len(set(FEATURE_NAMES)) == FEATURE_COUNT
    assert (INPUT_NAME, OUTPUT_NAME, OUTPUTS) == ("features", "scores", ("ctr", "cvr"))
    assert FEATURE_NAMES[:2] == ("user_interest_count", "user_segment_count")
    assert FEATURE_NAMES[-4:] == ("match_interest_context", "match_interest_offer",
                                  "match_context_offer", "match_segment_offer")


def test_the_documented_table_covers_every_column_in_order():
    table = re.findall(r"^(\d+)(?:-(\d+))?\s+(\S+)", features.__doc__, flags=re.MULTILINE)
    covered = []
    for first, last, name in table:
        columns = range(int(first), int(last or first) + 1)
        prefix = re.split(r"[{<]|\d+$", name)[0]
        assert all(FEATURE_NAMES[column].startswith(prefix) for column in columns), name
        if not last:
            assert FEATURE_NAMES[int(first)] == name
        covered.extend(columns)
    assert covered == list(range(FEATURE_COUNT))


def test_vocabularies_match_the_campaigns_app():
    assert features.DEVICE_TYPES == targeting.DEVICE_TYPES
    assert features.OPERATING_SYSTEMS == targeting.OPERATING_SYSTEMS
    assert tuple(Creative.Format.values) == features.FORMATS


def test_a_known_user_offer_and_context_encode_exactly():
    user = UserFeatures(interests=frozenset({"IAB8", "IAB20-3"}),
                        segments=frozenset({"coffee_lovers", "commuters"}),
                        loyalty_tier="gold", loyalty_balance=100_000.0, recency_hours=2160.0)
    offer = OfferFeatures(format="video", category="IAB8-5", bid_cpm=100.0,
                          historical_ctr=0.001, frequency_cap_use=0.25,
                          segments=frozenset({"commuters"}))
    context = ContextFeatures(device_type="phone", os="android", hour_of_week=5 * 24 + 6,
                              site_category="IAB20", is_app=True, is_interstitial=True,
                              ad_position=1)

    row = build_row(user=user, offer=offer, context=context)

    np.testing.assert_array_equal(row, _expected({
        "user_interest_count": 0.2,
        "user_segment_count": 0.1,
        "user_tier_gold": 1.0,
        "user_loyalty_balance": 1.0,
        "user_recency": 1.0,
        "user_recency_known": 1.0,
        "context_device_phone": 1.0,
        "context_os_android": 1.0,
        "context_hour_sin": 1.0,
        "context_hour_cos": math.cos(math.pi / 2),
        "context_weekend": 1.0,
        "context_app": 1.0,
        "context_interstitial": 1.0,
        "context_above_fold": 1.0,
        "context_category_known": 1.0,
        "offer_format_video": 1.0,
        "offer_category_iab8": 1.0,
        "offer_bid": 1.0,
        "offer_historical_ctr": 1 / 3,
        "offer_historical_ctr_known": 1.0,
        "offer_frequency_cap_use": 0.25,
        "match_interest_context": 1.0,
        "match_interest_offer": 1.0,
        "match_segment_offer": 1.0,
    }))


def test_numbers_between_the_saturation_points_use_their_documented_scales():
    user = UserFeatures(loyalty_tier="green", loyalty_balance=500.0, recency_hours=24.0)
    offer = OfferFeatures(format="banner", category="IAB1", bid_cpm=2.5, historical_ctr=0.01)
    context = ContextFeatures(device_type="desktop", os="macos", hour_of_week=20,
                              site_category="IAB1-2", ad_position=3)

    row = build_row(user=user, offer=offer, context=context)

    np.testing.assert_array_equal(row, _expected({
        "user_tier_green": 1.0,
        "user_loyalty_balance": math.log1p(500.0) / math.log1p(100_000.0),
        "user_recency": math.log1p(24.0) / math.log1p(2160.0),
        "user_recency_known": 1.0,
        "context_device_desktop": 1.0,
        "context_os_macos": 1.0,
        "context_hour_sin": math.sin(2 * math.pi * 20 / 24),
        "context_hour_cos": math.cos(2 * math.pi * 20 / 24),
        "context_category_known": 1.0,
        "offer_format_banner": 1.0,
        "offer_category_iab1": 1.0,
        "offer_bid": math.log1p(2.5) / math.log1p(100.0),
        "offer_historical_ctr": 2 / 3,
        "offer_historical_ctr_known": 1.0,
        "match_context_offer": 1.0,
    }))


def test_values_past_the_saturation_points_are_clipped():
    user = UserFeatures(interests=frozenset(f"IAB{number}" for number in range(1, 27)),
                        segments=frozenset(f"segment_{number}" for number in range(30)),
                        loyalty_balance=5_000_000.0, recency_hours=100_000.0)
    offer = OfferFeatures(format="native", category="IAB2", bid_cpm=400.0, historical_ctr=0.5,
                          frequency_cap_use=3.0)

    row = build_row(user=user, offer=offer, context=ContextFeatures())

    assert [float(row[FEATURE_NAMES.index(name)]) for name in (
        "user_interest_count", "user_segment_count", "user_loyalty_balance", "user_recency",
        "offer_bid", "offer_historical_ctr", "offer_frequency_cap_use",
    )] == [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_unknown_and_malformed_values_encode_as_zero_without_raising():
    user = UserFeatures(interests=frozenset({"IAB99", "sports", ""}), loyalty_tier="platinum",
                        loyalty_balance=math.nan, recency_hours=-3.0)
    offer = OfferFeatures(format="hologram", category="IAB0-1", bid_cpm=math.nan,
                          historical_ctr=math.nan, frequency_cap_use=math.inf)
    context = ContextFeatures(device_type="smartwatch", os="Symbian", hour_of_week=999,
                              site_category="not a category", ad_position=42)

    row = build_row(user=user, offer=offer, context=context)

    np.testing.assert_array_equal(row, _expected({
        "context_os_other": 1.0,
        "offer_frequency_cap_use": 1.0,
    }))


def test_historical_ctr_outside_zero_to_one_counts_as_unknown():
    offer = OfferFeatures(format="banner", category="IAB1", bid_cpm=-2.0, historical_ctr=-0.1)

    row = build_row(user=UserFeatures(), offer=offer, context=ContextFeatures())

    np.testing.assert_array_equal(row, _expected({
        "user_tier_none": 1.0,
        "context_os_other": 1.0,
        "offer_format_banner": 1.0,
        "offer_category_iab1": 1.0,
    }))


def test_categories_devices_and_operating_systems_ignore_case_and_spaces():
    user = UserFeatures(interests=frozenset({"iab3-7"}), loyalty_tier=" Gold ")
    offer = OfferFeatures(format="banner", category=" iab3 ", bid_cpm=1.0)
    context = ContextFeatures(device_type="CTV", os="tvOS ", site_category="Iab3")

    row = build_row(user=user, offer=offer, context=context)

    assert [name for name, value in zip(FEATURE_NAMES, row, strict=True) if value == 1.0] == [
        "user_tier_gold", "context_device_ctv", "context_os_tvos", "context_category_known",
        "offer_format_banner", "offer_category_iab3", "match_interest_context",
        "match_interest_offer", "match_context_offer",
    ]


def test_build_matrix_equals_the_stacked_rows_of_each_offer():
    user = UserFeatures(interests=frozenset({"IAB8", "IAB1"}), segments=frozenset({"runners"}),
                        loyalty_tier="reserve", loyalty_balance=42_000.0, recency_hours=3.5)
    context = ContextFeatures(device_type="tablet", os="ios", hour_of_week=100,
                              site_category="IAB8-1", is_app=True)
    offers = [
        OfferFeatures(format="banner", category="IAB8", bid_cpm=1.2, historical_ctr=0.003),
        OfferFeatures(format="video", category="IAB1-4", bid_cpm=15.0, frequency_cap_use=0.8,
                      segments=frozenset({"runners"})),
        OfferFeatures(format="unknown", category="", bid_cpm=0.0),
        OfferFeatures(format="audio", category="IAB26", bid_cpm=0.4, historical_ctr=0.0002),
    ]

    matrix = build_matrix(user=user, context=context, offers=offers)

    assert matrix.dtype == np.float32
    assert matrix.shape == (4, FEATURE_COUNT)
    np.testing.assert_array_equal(matrix, np.stack(
        [build_row(user=user, offer=offer, context=context) for offer in offers]))
    assert len({row.tobytes() for row in matrix}) == 4


def test_offers_encoded_beforehand_give_the_same_matrix():
    """What the bidder builds from its per-snapshot encodings is what training builds."""
    offers = [
        OfferFeatures(format="banner", category="IAB8", bid_cpm=1.2, historical_ctr=0.003),
        OfferFeatures(format="video", category="IAB1-4", bid_cpm=15.0,
                      segments=frozenset({"runners"})),
        OfferFeatures(format="unknown", category="", bid_cpm=0.0),
        OfferFeatures(format="native", category="IAB26", bid_cpm=250.0, historical_ctr=0.2,
                      segments=frozenset({"cyclists", "runners"})),
    ]
    users = [UserFeatures(),
             UserFeatures(interests=frozenset({"IAB8", "IAB1", "nonsense"}),
                          segments=frozenset({"runners"}), loyalty_tier="gold",
                          loyalty_balance=900.0, recency_hours=30.0),
             UserFeatures(segments=frozenset({"cyclists"}))]
    contexts = [ContextFeatures(),
                ContextFeatures(device_type="phone", os="android", hour_of_week=130,
                                site_category="IAB8-1", ad_position=1),
                ContextFeatures(site_category="IAB26", is_app=True, is_interstitial=True)]
    encoded = encode_offers(offers)
    picks = [3, 0, 2, 0, 1]  # any of them, in any order, repeated

    for user in users:
        for context in contexts:
            np.testing.assert_array_equal(
                build_matrix_picked(user=user, context=context, encoded=encoded, picks=picks),
                build_matrix(user=user, context=context,
                             offers=[offers[pick] for pick in picks]))
    assert build_matrix_picked(user=users[0], context=contexts[0], encoded=encoded,
                               picks=[]).shape == (0, FEATURE_COUNT)


def test_build_row_is_float32_of_feature_count():
    row = build_row(user=UserFeatures(), offer=OfferFeatures(format="banner", category="IAB1",
                                                             bid_cpm=1.0),
                    context=ContextFeatures())

    assert (row.dtype, row.shape) == (np.float32, (FEATURE_COUNT,))


def test_no_offers_give_an_empty_matrix():
    matrix = build_matrix(user=UserFeatures(), context=ContextFeatures(), offers=[])

    assert (matrix.dtype, matrix.shape) == (np.float32, (0, FEATURE_COUNT))
