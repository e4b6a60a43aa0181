"""The config snapshot: everything the bid path needs from the campaigns app, and nothing else.

The campaigns app compiles active campaigns, their approved creatives, the exchanges and the
currency rates into one immutable, versioned `Snapshot` after every committed change that
affects bidding, publishes it on NATS and keeps the latest in a key-value bucket. A bidder
decodes it, builds its index and swaps both in at once, so it never serves half a change.
The snapshot travels as a gzipped object in the bus's object store; the subject and the
bucket carry a small `Pointer` to it.

Only plain values cross: ids, vocabularies as the bid path matches them (see
`campaigns.targeting`), money as Decimal, times as UTC epoch seconds. Adding a field is
backwards compatible (bidders ignore fields they do not know); removing or re-typing one
needs `SCHEMA_VERSION` bumped, and a bidder refuses a snapshot whose schema it does not know.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import gzip
from decimal import Decimal

import msgspec

from campaign_express.backends.bus import Bus
from dsp.partners import PartnerEntry

SCHEMA_VERSION = 1
SUBJECT = "config.snapshot"  # NATS subject a pointer to a new snapshot is published on
BUCKET = "config"  # key-value bucket (the latest pointer) and object store (the snapshot)
KEY = "snapshot"
OBJECT = "snapshot"
# Price decryption hooks an exchange may name (`ExchangeEntry.price_decryption`); the bidder
# implements each one. "doubleclick": Google's encrypted winning price (HMAC-SHA1 pad and
# integrity signature), which several other exchanges also use.
PRICE_DECRYPTION_HOOKS = ("doubleclick",)


class CreativeEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    name: str
    format: str  # banner, video, native, audio
    sizes: tuple[tuple[int, int], ...] = ()
    asset_url: str = ""  # absolute URL of the uploaded asset, "" with third-party markup
    markup: str = ""  # third-party markup (HTML tag, VAST XML, native JSON)
    click_url: str = ""
    adomain: str = ""
    app_bundle: str = ""  # the advertised app (app-install ads): bid.bundle, checked against bapp
    categories: tuple[str, ...] = ()
    attributes: tuple[int, ...] = ()
    mimes: tuple[str, ...] = ()
    protocols: tuple[int, ...] = ()
    duration_seconds: int | None = None
    is_secure: bool = True  # every URL it loads is https


class CampaignEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: int
    advertiser_id: int
    name: str
    currency: str
    time_zone: str  # the advertiser's, for dayparts and even pacing
    start_at: int  # UTC epoch seconds
    end_at: int
    dayparts: dict[str, tuple[int, ...]] = {}  # mon..sun -> hours; empty means always
    total_budget: Decimal
    daily_budget: Decimal
    pacing: str = "even"  # even, accelerated
    base_bid_cpm: Decimal
    max_bid_cpm: Decimal
    frequency_cap_hour: int | None = None
    frequency_cap_day: int | None = None
    frequency_cap_lifetime: int | None = None
    countries: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    device_types: tuple[str, ...] = ()
    operating_systems: tuple[str, ...] = ()
    site_domains_allow: tuple[str, ...] = ()
    site_domains_block: tuple[str, ...] = ()
    app_bundles_allow: tuple[str, ...] = ()
    app_bundles_block: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    loyalty_tiers: tuple[str, ...] = ()
    loyalty_program_id: int | None = None  # the advertiser's program the tiers belong to
    deal_ids: tuple[str, ...] = ()
    creatives: tuple[CreativeEntry, ...] = ()


class ExchangeEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    slug: str  # the path segment of /v1/bid/{exchange}
    name: str
    seat: str  # our seat id at this exchange
    is_default: bool = False  # serves /v1/bid without a slug
    auth: str = "none"  # none, token, ip
    token_sha256: str = ""  # sha256 of the bearer token the exchange sends (auth=token)
    allowed_networks: tuple[str, ...] = ()  # CIDRs (auth=ip)
    price_decryption: str = ""  # "" (plain prices) or a decryption hook name
    price_key_ref: str = ""  # where the hook finds its key (an environment variable name)
    currency: str = "USD"  # what this exchange settles in
    no_bid_style: str = "204"  # 204, or nbr: 200 {"id", "nbr"}


class Snapshot(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    schema_version: int = SCHEMA_VERSION
    version: int  # increases with every publish
    created_at: str  # ISO 8601 UTC
    campaigns: tuple[CampaignEntry, ...] = ()
    exchanges: tuple[ExchangeEntry, ...] = ()
    # Units of each currency per 1 USD, as ops set them; USD itself is 1.
    usd_rates: dict[str, Decimal] = {}
    # Enabled partner DSPs (`dsp.partners`); bidders route to them only with DSP routing on.
    dsp_partners: tuple[PartnerEntry, ...] = ()


class SnapshotError(ValueError):
    """A snapshot this bidder cannot serve (undecodable or of an unknown schema)."""


class Pointer(msgspec.Struct, frozen=True, kw_only=True):
    """What the subject and the key-value bucket carry: a snapshot of thousands of campaigns
    is megabytes, over NATS's message size, so the snapshot itself is an object."""

    version: int
    object: str
    size: int


_encoder = msgspec.json.Encoder(decimal_format="string")
_decoder = msgspec.json.Decoder(Snapshot)
_GZIP_MAGIC = b"\x1f\x8b"


def encode(snapshot: Snapshot) -> bytes:
    """Gzipped JSON: a snapshot compresses about tenfold (repeated keys and vocabularies)."""
    return gzip.compress(_encoder.encode(snapshot), compresslevel=6, mtime=0)


def decode(data: bytes) -> Snapshot:
    """A snapshot from gzipped or plain JSON; raises SnapshotError."""
    try:
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
        snapshot = _decoder.decode(data)
    except (msgspec.DecodeError, OSError, EOFError) as error:
        raise SnapshotError(f"undecodable snapshot: {error}") from error
    if snapshot.schema_version != SCHEMA_VERSION:
        raise SnapshotError(f"snapshot schema {snapshot.schema_version}; this bidder reads "
                            f"schema {SCHEMA_VERSION}")
    return snapshot


async def publish(bus: Bus, snapshot: Snapshot) -> None:
    """Store the snapshot, then point the bucket at it (a bidder starting now loads it),
    then tell running bidders."""
    data = encode(snapshot)
    await bus.object_put(BUCKET, OBJECT, data)
    pointer = msgspec.json.encode(Pointer(version=snapshot.version, object=OBJECT,
                                          size=len(data)))
    await bus.kv_put(BUCKET, KEY, pointer)
    await bus.publish(SUBJECT, pointer)


def pointer_version(pointer: bytes) -> int | None:
    """The version a pointer names, None when it is not one (`fetch` says why)."""
    try:
        return msgspec.json.decode(pointer, type=Pointer).version
    except msgspec.DecodeError:
        return None


async def fetch(bus: Bus, pointer: bytes) -> Snapshot:
    """The snapshot a pointer names. The object may already hold a newer one (it is replaced
    in place): that is the one to serve anyway."""
    try:
        where = msgspec.json.decode(pointer, type=Pointer)
    except msgspec.DecodeError as error:
        raise SnapshotError(f"not a snapshot pointer: {error}") from error
    data = await bus.object_get(BUCKET, where.object)
    if data is None:
        raise SnapshotError(f"snapshot object {where.object!r} is missing")
    snapshot = decode(data)
    if snapshot.version < where.version:
        raise SnapshotError(f"snapshot object holds version {snapshot.version}, older than "
                            f"the pointer's {where.version}")
    return snapshot
