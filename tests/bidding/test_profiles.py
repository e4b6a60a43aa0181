"""User profiles: the write function, the two cache tiers, and what bidding does with them."""

import json

import msgspec
import pytest
from prometheus_client import REGISTRY

from bidding.profiles import (
    L1_MISSING_TTL_SECONDS,
    LoyaltyStatus,
    ProfileCache,
    profile_key,
    profile_update,
)
from campaign_express.backends.store import MemoryStore
from tests.bidding.bidder_fixtures import campaign, client, creative, fixture, started_service


def cache_count(tier: str, result: str) -> float:
    return REGISTRY.get_sample_value("profile_cache_total",
                                     {"tier": tier, "result": result}) or 0.0


async def test_profile_update_writes_the_versioned_json_with_the_ttl():
    store = MemoryStore()
    await profile_update(store, "u-1", lambda profile: msgspec.structs.replace(
        profile, segments=("coffee",), loyalty={"7": LoyaltyStatus(tier="gold", balance=900)}))

    stored = json.loads(await store.get(profile_key("u-1")))
    assert stored["version"] == 1
    assert stored["segments"] == ["coffee"]
    assert stored["loyalty"] == {"7": {"tier": "gold", "balance": 900, "bid_boost": "1"}}


async def test_l1_serves_repeat_reads_and_l2_is_read_once():
    store = MemoryStore()
    await profile_update(store, "u-2", lambda profile: msgspec.structs.replace(
        profile, interests=("IAB8",)))
    cache = ProfileCache(store)
    l1_hits, l2_hits = cache_count("l1", "hit"), cache_count("l2", "hit")

    first = await cache.get("u-2")
    second = await cache.get("u-2")

    assert first == second and first.interests == ("IAB8",)
    assert cache_count("l2", "hit") == l2_hits + 1
    assert cache_count("l1", "hit") == l1_hits + 1


async def test_l1_is_bounded_and_a_missing_profile_is_remembered_only_briefly():
    now = [0.0]
    store = MemoryStore()
    cache = ProfileCache(store, max_entries=2, clock=lambda: now[0])
    assert await cache.get("nobody") is None
    await profile_update(store, "nobody", lambda profile: profile)
    assert await cache.get("nobody") is None  # still the remembered miss
    now[0] = L1_MISSING_TTL_SECONDS + 1
    assert await cache.get("nobody") == await cache.get("nobody") is not None
    await cache.get("a")
    await cache.get("b")
    assert list(cache._entries) == ["a", "b"]


async def test_a_loyalty_tier_campaign_bids_only_for_members_of_its_tiers(tmp_path):
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), loyalty_tiers=("gold", "reserve"), loyalty_program_id=7))
    request = fixture("banner-site-2.6.json")  # user ce-user-123, with consent

    async with client(service) as http:
        before = await http.post("/v1/bid", json=request)
        await profile_update(service.store, "ce-user-123", lambda profile: msgspec.structs.replace(
            profile, loyalty={"7": LoyaltyStatus(tier="gold", balance=900)}))
        service.engine.profiles.forget("ce-user-123")
        member = await http.post("/v1/bid", json=request)
        anonymous = await http.post("/v1/bid", json={**request, "regs": {"coppa": 1}})

    assert (before.status_code, member.status_code, anonymous.status_code) == (204, 200, 204)
    await service.stop()


@pytest.mark.parametrize("consent", [True, False])
async def test_profile_segments_count_only_with_consent(tmp_path, consent):
    service = await started_service(tmp_path, campaign(1, creative(11, "banner"),
                                                       segments=("coffee-lovers",)))
    await profile_update(service.store, "ce-user-123", lambda profile: msgspec.structs.replace(
        profile, segments=("coffee-lovers",)))
    request = fixture("banner-site-2.6.json")
    if not consent:
        request["regs"] = {"gdpr": 1}
        request["user"] = {"buyeruid": "ce-user-123"}

    async with client(service) as http:
        response = await http.post("/v1/bid", json=request)

    assert response.status_code == (200 if consent else 204)
    await service.stop()
