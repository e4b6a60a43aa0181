"""User profiles: the versioned `profile:{user_id}` JSON, and its two cache tiers.

`bidding/` owns the schema. Loyalty and ingest change a profile only through
`profile_update`, so every writer produces the same shape; readers ignore fields they do not
know, and a profile of a newer `version` is still read for the fields this one knows.

Reads go L1 (this process, an LRU bounded in size whose entries live half the L2 TTL, a
minute for users without a profile) then L2 (the store, TTL 3600 s). Hits and misses of each
tier are metrics. A store that cannot be reached reads as no profile: profiles make bids
better, they never make them safe.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

import msgspec
from prometheus_client import Counter

from campaign_express.backends.store import Store, StoreUnavailable

SCHEMA_VERSION = 1
L2_TTL_SECONDS = 3600
L1_TTL_SECONDS = L2_TTL_SECONDS // 2
L1_MISSING_TTL_SECONDS = 60  # a user without a profile may get one soon (a loyalty earn)

CACHE = Counter("profile_cache_total", "Profile lookups by tier (l1, l2) and result "
                "(hit, miss).", ["tier", "result"])
_L1_HIT, _L1_MISS = CACHE.labels("l1", "hit"), CACHE.labels("l1", "miss")  # once per bid
_L2_HIT, _L2_MISS = CACHE.labels("l2", "hit"), CACHE.labels("l2", "miss")


class LoyaltyStatus(msgspec.Struct, frozen=True, kw_only=True):
    tier: str
    balance: int = 0  # points
    bid_boost: str = "1"  # the tier's price multiplier, a Decimal as text (never a float)


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    version: int = SCHEMA_VERSION
    interests: tuple[str, ...] = ()  # IAB content categories the user reads
    segments: tuple[str, ...] = ()
    loyalty: dict[str, LoyaltyStatus] = {}  # loyalty program id -> status
    last_seen: int | None = None  # epoch seconds
    updated_at: int = 0


_decoder = msgspec.json.Decoder(Profile)


# Writers publish the user id here after `profile_update`, so every bidder drops its cached
# copy at once instead of serving the old one until its L1 TTL runs out.
PROFILE_UPDATED_SUBJECT = "profiles.updated"


def profile_key(user_id: str) -> str:
    return f"profile:{user_id}"


def decode(data: bytes) -> Profile | None:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None


async def profile_update(store: Store, user_id: str,
                         change: Callable[[Profile], Profile]) -> Profile:
    """The one way to write a profile: read it, apply ``change``, write it back with the TTL.

    Two writers updating one user in the same instant can lose one update (last write wins):
    the profile is a cache of what loyalty and ingest keep durably, rebuilt on their next
    write, never the record itself.
    """
    current = decode(await store.get(profile_key(user_id)) or b"") or Profile()
    updated = msgspec.structs.replace(change(current), version=SCHEMA_VERSION,
                                      updated_at=int(time.time()))
    await store.set(profile_key(user_id), msgspec.json.encode(updated),
                    ttl_seconds=L2_TTL_SECONDS)
    return updated


class ProfileCache:
    def __init__(self, store: Store, *, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Profile | None]] = OrderedDict()

    async def get(self, user_id: str) -> Profile | None:
        now = self._clock()
        entry = self._entries.get(user_id)
        if entry is not None and entry[0] > now:
            self._entries.move_to_end(user_id)
            _L1_HIT.inc()
            return entry[1]
        _L1_MISS.inc()
        try:
            data = await self.store.get(profile_key(user_id))
        except StoreUnavailable:
            return None
        profile = decode(data) if data else None
        (_L2_HIT if profile is not None else _L2_MISS).inc()
        ttl = L1_TTL_SECONDS if profile is not None else L1_MISSING_TTL_SECONDS
        self._entries[user_id] = (now + ttl, profile)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return profile

    def forget(self, user_id: str) -> None:
        self._entries.pop(user_id, None)
