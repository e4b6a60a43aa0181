"""The campaign index: which (campaign, creative) pairs a request's impression could be shown.

Built once per snapshot (`CampaignIndex.build`) and swapped in whole, so lookups never see
half of a snapshot. A lookup intersects inverted indexes (facet value -> the set of pair
ids, as an integer bitset) instead of scanning campaigns; each facet also keeps an "any" set for
the pairs that do not restrict it. Unions and intersections are whole-integer operations, and
the results are produced lazily, best first, so a caller that takes a few candidates pays for a
few, not for every campaign that matches.

Pair ids are positions in (highest maximum CPM first, campaign id, creative id) order, so
results come in that order: the candidates that may pay the most come first.

What `candidates` decides, exactly:

- format: the creative's format equals the impression's (``banner``, ``video``, ``native``,
  ``audio``).
- size: with a size, the creative lists that exact WxH, or lists no sizes at all (native,
  audio, VAST without sizes). ``None`` does not constrain size.
- country: the campaign lists the request's country (ISO 3166-1 alpha-3), or targets no
  country. An unknown country (``""``) matches only campaigns without country targeting.
- device type: the same, for the campaign's device types.
- operating system: the same, for the campaign's operating systems (normalized names).
- video and audio MIME types and protocols, when the impression lists them: the creative
  has one of the listed MIME types, and one of the listed protocols (its own with
  third-party markup, VAST 4.0 for the VAST `bidding.markup` writes). Other formats have
  neither.
- categories: the campaign targets no category, or one of the request's content categories,
  or the parent of one (a campaign on ``IAB1`` matches content in ``IAB1-2``).
- deals: a campaign with deal ids bids only on a request carrying one of them. A campaign
  without deal ids ("open") matches only when ``open_allowed``: the caller says whether open
  bidding is allowed (it is not on a private auction with deals, ``pmp.private_auction=1``),
  and passes ``open_allowed=True`` for a request without deals.

What it leaves to later filters: the schedule (start/end) and dayparts in the advertiser's
time zone, regions, site domain and app bundle allow/block lists, user segments and loyalty
tiers, the request's blocklists (``bcat``, ``badv``, ``bapp``, creative attributes), video
and audio duration, secure-only impressions, floors and budgets, pacing and frequency caps.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import NamedTuple

from bidding.markup import OUR_VAST_PROTOCOLS
from bidding.snapshot import CampaignEntry, CreativeEntry, ExchangeEntry, Snapshot

TIMED_FORMATS = ("video", "audio")


class Candidate(NamedTuple):
    campaign: CampaignEntry
    creative: CreativeEntry
    position: int  # in `CampaignIndex.pairs`


def _mask(ids: Iterable[int]) -> int:
    """The bitset of ``ids``, built in one pass over a byte array."""
    ordered = list(ids)
    if not ordered:
        return 0
    bits = bytearray((max(ordered) >> 3) + 1)
    for pair_id in ordered:
        bits[pair_id >> 3] |= 1 << (pair_id & 7)
    return int.from_bytes(bits, "little")


class _Facet:
    """Value -> the pairs carrying it, plus the pairs that do not restrict this facet.

    Sets of pairs are Python integers used as bitsets (bit i is pair i): union and
    intersection are single C-level operations over a few kilobytes, whatever the number of
    pairs in them, and the lowest set bits are the pairs that come first.
    """

    __slots__ = ("by_value", "unrestricted")

    def __init__(self, by_value: Mapping[object, Iterable[int]],
                 unrestricted: Iterable[int]) -> None:
        self.by_value: dict[object, int] = {value: _mask(ids) for value, ids in by_value.items()}
        self.unrestricted = _mask(unrestricted)

    def passing(self, values: Iterable[object], *, include_unrestricted: bool = True) -> int:
        """The pairs passing this facet for a request with these values."""
        mask = self.unrestricted if include_unrestricted else 0
        for value in values:
            mask |= self.by_value.get(value, 0)
        return mask


def _category_values(categories: Iterable[str]) -> list[str]:
    """The request's categories and their parents (``IAB1-2`` also means ``IAB1``)."""
    values = dict.fromkeys(categories)
    for category in list(values):
        parent, dash, _ = category.partition("-")
        if dash:
            values.setdefault(parent)
    return list(values)


class CampaignIndex:
    """The snapshot's campaigns, exchanges and rates, ready for lookups. Immutable."""

    def __init__(self, snapshot: Snapshot, pairs: tuple[Candidate, ...],
                 facets: dict[str, _Facet]) -> None:
        self.snapshot = snapshot
        self.pairs = pairs  # every (campaign, creative) pair, in the order lookups give them
        self._facets = facets
        self._exchanges = {exchange.slug: exchange for exchange in snapshot.exchanges}
        self._campaigns = {campaign.id: campaign for campaign in snapshot.campaigns}
        self._default_exchange = next(
            (exchange for exchange in snapshot.exchanges if exchange.is_default), None)

    @classmethod
    def build(cls, snapshot: Snapshot) -> CampaignIndex:
        pairs: list[Candidate] = []
        by_format: dict[object, list[int]] = {}
        by_size: dict[object, list[int]] = {}
        any_size: list[int] = []
        by_country: dict[object, list[int]] = {}
        any_country: list[int] = []
        by_device: dict[object, list[int]] = {}
        any_device: list[int] = []
        by_category: dict[object, list[int]] = {}
        any_category: list[int] = []
        by_deal: dict[object, list[int]] = {}
        open_deals: list[int] = []
        by_os: dict[object, list[int]] = {}
        any_os: list[int] = []
        by_mime: dict[object, list[int]] = {}
        by_protocol: dict[object, list[int]] = {}
        untimed: list[int] = []  # banner and native: no MIME type or protocol to match

        def add(bucket: dict[object, list[int]], unrestricted: list[int],
                values: Iterable[object], pair_ids: list[int]) -> None:
            values = tuple(values)
            if not values:
                unrestricted.extend(pair_ids)
            for value in values:
                bucket.setdefault(value, []).extend(pair_ids)

        # Highest maximum bid first: lookups return pairs in this order, so a caller that can
        # only price a few candidates prices the ones that may pay the most.
        for campaign in sorted(snapshot.campaigns,
                               key=lambda entry: (-entry.max_bid_cpm, entry.id)):
            pair_ids = []
            for creative in sorted(campaign.creatives, key=lambda entry: entry.id):
                pair_id = len(pairs)
                pairs.append(Candidate(campaign, creative, pair_id))
                pair_ids.append(pair_id)
                by_format.setdefault(creative.format, []).append(pair_id)
                add(by_size, any_size, creative.sizes, [pair_id])
                if creative.format in TIMED_FORMATS:  # without any, it matches no list
                    for mime in creative.mimes:
                        by_mime.setdefault(mime, []).append(pair_id)
                    for protocol in (creative.protocols if creative.markup
                                     else OUR_VAST_PROTOCOLS):
                        by_protocol.setdefault(protocol, []).append(pair_id)
                else:
                    untimed.append(pair_id)
            add(by_country, any_country, campaign.countries, pair_ids)
            add(by_device, any_device, campaign.device_types, pair_ids)
            add(by_category, any_category, campaign.categories, pair_ids)
            add(by_deal, open_deals, campaign.deal_ids, pair_ids)
            add(by_os, any_os, campaign.operating_systems, pair_ids)
        facets = {
            "format": _Facet(by_format, ()),
            "size": _Facet(by_size, any_size),
            "country": _Facet(by_country, any_country),
            "device_type": _Facet(by_device, any_device),
            "category": _Facet(by_category, any_category),
            "deal": _Facet(by_deal, open_deals),
            "os": _Facet(by_os, any_os),
            "mime": _Facet(by_mime, untimed),
            "protocol": _Facet(by_protocol, untimed),
        }
        return cls(snapshot, tuple(pairs), facets)

    @property
    def version(self) -> int:
        return self.snapshot.version

    def __len__(self) -> int:
        """The number of (campaign, creative) pairs indexed."""
        return len(self.pairs)

    def campaign(self, campaign_id: int) -> CampaignEntry | None:
        return self._campaigns.get(campaign_id)

    def exchange(self, slug: str) -> ExchangeEntry | None:
        return self._exchanges.get(slug)

    def default_exchange(self) -> ExchangeEntry | None:
        return self._default_exchange

    def candidates(self, *, format: str, size: tuple[int, int] | None, country: str,
                   device_type: str, deal_ids: tuple[str, ...] = (),
                   categories: tuple[str, ...] = (),
                   open_allowed: bool = True, os: str = "", mimes: Iterable[str] = (),
                   protocols: Iterable[int] = ()) -> Iterator[Candidate]:
        """The pairs passing the indexed facets (see the module docstring), highest maximum
        CPM first, then by campaign and creative id. Empty ``mimes`` or ``protocols``: the
        impression lists none, and they do not constrain."""
        facets = self._facets
        matches = (facets["format"].passing((format,), include_unrestricted=False)
                   & facets["country"].passing((country,))
                   & facets["device_type"].passing((device_type,))
                   & facets["category"].passing(_category_values(categories))
                   & facets["deal"].passing(deal_ids, include_unrestricted=open_allowed)
                   & facets["os"].passing((os,)))
        if size is not None and matches:
            matches &= facets["size"].passing((size,))
        if mimes and matches:
            matches &= facets["mime"].passing(mimes)
        if protocols and matches:
            matches &= facets["protocol"].passing(protocols)
        return self._in_order(matches)

    def _in_order(self, matches: int) -> Iterator[Candidate]:
        """Lazily, lowest pair id first: a caller that stops after a few pays for a few.

        Bits are taken from a small window of the set: operations on the whole set cost
        in proportion to its size (kilobytes for 10,000 campaigns), so they run once per
        window (or once per gap of pairs that do not match), not once per candidate.
        """
        pairs = self.pairs
        base = 0
        while matches:
            window = matches & _WINDOW_MASK
            if not window:
                gap = (matches & -matches).bit_length() - 1
                matches >>= gap
                base += gap
                continue
            while window:
                lowest = window & -window
                yield pairs[base + lowest.bit_length() - 1]
                window ^= lowest
            matches >>= _WINDOW_BITS
            base += _WINDOW_BITS


_WINDOW_BITS = 256
_WINDOW_MASK = (1 << _WINDOW_BITS) - 1
