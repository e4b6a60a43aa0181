"""The normalized request the bidder works from: `normalize(request) -> RequestView`.

Everything downstream (tmax guard, eligibility, pricing, privacy) reads a `RequestView`,
never the raw structs, so each reconciliation below happens once, here:

- 2.5 and 2.6 locations: `regs.gdpr`/`regs.ext.gdpr`, `regs.us_privacy`/`regs.ext.us_privacy`,
  `regs.gpp`/`regs.ext.gpp`, `regs.gpp_sid`/`regs.ext.gpp_sid`, `user.consent`/
  `user.ext.consent`, `user.eids`/`user.ext.eids`, `source.schain`/`source.ext.schain`. The
  2.6 field wins when present; the `ext` one is read only when the 2.6 one is absent (the rule
  Prebid adopted, prebid/prebid-server#2139).
- The spec's defaults: `at` 2, `cur` ["USD"], `bidfloorcur` "USD", `deal.bidfloorcur` "USD"
  (not inherited from the imp), `cattax` 1.
- Our vocabularies: device type and OS as the words the snapshot's targeting uses, country
  as ISO 3166-1 alpha-3 and region as ISO 3166-2 where it can be built.

Absent strings are "", absent sets are empty; `None` is kept only where "unknown" must stay
distinct from a value (`tmax_ms`, `gdpr_applies`, `schain`, sizes and durations).
`normalize` never raises on a decoded request: a malformed `ext` is read as absent.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

import msgspec

from bidding.openrtb import tcf
from bidding.openrtb.gpp import allows_targeted_ads
from bidding.openrtb.request import (
    Audio,
    Banner,
    BidRequest,
    Device,
    DurFloors,
    Eid,
    Geo,
    Imp,
    Native,
    SupplyChain,
    Video,
)
from bidding.openrtb.vocabulary import (
    DEVICE_TYPES,
    country_code,
    domain_name,
    os_name,
    region_code,
)

Medium = Literal["site", "app", "dooh"]

DEFAULT_CURRENCY = "USD"
DEFAULT_AUCTION_TYPE = 2  # second price plus (§3.2.1)
DEFAULT_CATEGORY_TAXONOMY = 1  # IAB Content Taxonomy 1.0
_ZERO = Decimal(0)

_ZEROED_IFA = frozenset({"00000000-0000-0000-0000-000000000000", "0"})


class DealView(msgspec.Struct, frozen=True, gc=False):
    deal_id: str
    floor: Decimal
    floor_currency: str  # the deal's own, USD when absent: never the imp's
    auction_type: int  # deal.at, else the request's; 3 = the floor is the agreed price
    allowed_seats: frozenset[str]
    allowed_advertiser_domains: frozenset[str]  # lower-cased
    is_guaranteed: bool


class BannerView(msgspec.Struct, frozen=True, gc=False):
    sizes: tuple[tuple[int, int], ...]  # from format[], else w/h; empty when neither
    blocked_types: frozenset[int]  # btype
    blocked_attributes: frozenset[int]  # battr
    mimes: tuple[str, ...]
    position: int | None


class VideoView(msgspec.Struct, frozen=True, gc=False):
    mimes: tuple[str, ...]
    min_duration: int | None
    max_duration: int | None
    required_durations: tuple[int, ...]  # rqddurs: exclusive with min/max duration
    protocols: frozenset[int]
    w: int | None
    h: int | None
    blocked_attributes: frozenset[int]
    plcmt: int | None
    placement: int | None  # deprecated, kept for senders that have no plcmt yet
    pod_id: str
    pod_duration: int | None
    max_sequence: int | None
    min_cpm_per_second: Decimal | None
    # durfloors: (shortest, longest, floor) per duration range, None for an open end
    duration_floors: tuple[tuple[int | None, int | None, Decimal], ...] = ()


class AudioView(msgspec.Struct, frozen=True, gc=False):
    mimes: tuple[str, ...]
    min_duration: int | None
    max_duration: int | None
    required_durations: tuple[int, ...]
    protocols: frozenset[int]
    blocked_attributes: frozenset[int]
    min_cpm_per_second: Decimal | None
    duration_floors: tuple[tuple[int | None, int | None, Decimal], ...] = ()


class NativeView(msgspec.Struct, frozen=True, gc=False):
    request: str  # the Native Ads API payload as JSON text ("" when the sender gave none)
    version: str
    blocked_attributes: frozenset[int]


class ImpView(msgspec.Struct, frozen=True, gc=False):
    """One impression. `is_secure` is `imp.secure` when sent (any value but 0 is secure);
    when absent it is True on a site whose page is https, where insecure assets would be
    blocked by the browser anyway, and False otherwise. Floors are Decimal and 0 when absent.
    """

    imp_id: str
    banner: BannerView | None
    video: VideoView | None
    audio: AudioView | None
    native: NativeView | None
    floor: Decimal
    floor_currency: str
    is_secure: bool
    is_interstitial: bool
    is_rewarded: bool
    tag_id: str
    deals: tuple[DealView, ...]
    is_private_auction: bool  # only bids on `deals` are accepted

    @property
    def media_types(self) -> tuple[str, ...]:
        offered = (("banner", self.banner), ("video", self.video), ("audio", self.audio),
                   ("native", self.native))
        return tuple(name for name, media in offered if media is not None)

    def timed(self, media: str) -> VideoView | AudioView | None:
        """The video or audio object ``media`` names; None for banner and native."""
        return self.video if media == "video" else self.audio if media == "audio" else None


class SupplyChainView(msgspec.Struct, frozen=True, gc=False):
    is_complete: bool
    nodes: tuple[tuple[str, str], ...]  # (asi, sid), originating seller first


class ExternalId(msgspec.Struct, frozen=True, gc=False):
    source: str
    id: str
    agent_type: int | None  # uids[].atype: 1 device (app) id, 3 person/browser id


class RequestView(msgspec.Struct, frozen=True, gc=False):
    """One bid request as the bidder reads it.

    `user_id` follows the identity rule (DESIGN.md, flow 0): `user.buyeruid`, else `user.id`,
    else `device.ifa`; an all-zero IFA (what a device sends when tracking is limited) is no
    one, since it would merge every such user into one profile and one frequency cap.

    `has_user_consent` is the conservative gate for using personal data. It is False when
    COPPA applies, or GDPR applies and the TCF v2 consent string does not consent to
    purposes 1, 3 and 4 (`bidding.openrtb.tcf`; no string, or one that cannot be read, does
    not), or `us_privacy` says "Y" (opted out of sale) in its third character, or a GPP
    section that `gpp_sid` names as applying is missing from `gpp` or refuses
    (`bidding.openrtb.gpp`: the EU TCF section, US privacy, or an opt-out of sale, sharing or
    targeted advertising in the US national and state sections), or `lmt` or `dnt` is set;
    True otherwise. With ``gdpr_vendor_id`` (`CAMPAIGN_EXPRESS__GDPR__VENDOR_ID`), a TCF
    string must also give that vendor consent.
    """

    request_id: str
    tmax_ms: int | None
    auction_type: int
    currencies: tuple[str, ...]  # in the sender's order
    is_test: bool
    blocked_categories: frozenset[str]
    allowed_categories: frozenset[str]
    category_taxonomy: int
    blocked_advertiser_domains: frozenset[str]  # lower-cased
    blocked_app_bundles: frozenset[str]
    allowed_seats: frozenset[str]
    blocked_seats: frozenset[str]
    allowed_languages: frozenset[str]  # lower-cased
    medium: Medium | None
    domain: str  # lower-cased, without "www."
    bundle: str
    publisher_id: str
    page: str
    content_categories: tuple[str, ...]
    device_type: str
    os: str
    country: str  # ISO 3166-1 alpha-3
    region: str  # ISO 3166-2 ("US-CA") when buildable
    city: str
    ip: str
    user_agent: str
    language: str
    ifa: str
    limits_ad_tracking: bool
    do_not_track: bool
    user_id: str
    segments: frozenset[str]
    external_ids: tuple[ExternalId, ...]
    coppa_applies: bool
    gdpr_applies: bool | None
    consent: str
    us_privacy: str
    gpp: str
    gpp_sid: tuple[int, ...]
    has_user_consent: bool
    schain: SupplyChainView | None
    imps: tuple[ImpView, ...]


def normalize(request: BidRequest, *, gdpr_vendor_id: int | None = None) -> RequestView:
    """The view of a decoded request; see the module docstring for the rules."""
    site, app, dooh = request.site, request.app, request.dooh
    device = request.device or Device()
    user = request.user
    regs = request.regs
    regs_ext = regs.ext if regs is not None else None
    user_ext = user.ext if user is not None else None

    medium: Medium | None
    # The spec allows exactly one; a sender that sends several gets the most specific.
    if dooh is not None:
        medium, publisher, domain = "dooh", dooh.publisher, domain_name(dooh.domain)
        categories: Iterable[str] = ()
    elif app is not None:
        medium, publisher, domain = "app", app.publisher, domain_name(app.domain)
        categories = [*(app.cat or ()), *(app.sectioncat or ()), *(app.pagecat or ())]
    elif site is not None:
        medium, publisher = "site", site.publisher
        domain = domain_name(site.domain) or domain_name(site.page)
        categories = [*(site.cat or ()), *(site.sectioncat or ()), *(site.pagecat or ())]
    else:
        medium, publisher, domain, categories = None, None, "", ()
    page = (site.page or "") if site is not None and medium == "site" else ""

    auction_type = request.at if request.at is not None else DEFAULT_AUCTION_TYPE
    geo = device.geo or (user.geo if user is not None else None) or Geo()
    country = country_code(geo.country)

    coppa = _flag(regs.coppa) if regs is not None else None
    gdpr = _flag(regs.gdpr) if regs is not None and regs.gdpr is not None else _flag(
        _ext(regs_ext, "gdpr"))
    consent = _first_text(user.consent if user is not None else None, _ext(user_ext, "consent"))
    us_privacy = _first_text(regs.us_privacy if regs is not None else None,
                             _ext(regs_ext, "us_privacy"))
    gpp = _first_text(regs.gpp if regs is not None else None, _ext(regs_ext, "gpp"))
    gpp_sid = _gpp_sections(regs.gpp_sid if regs is not None and regs.gpp_sid is not None
                            else _ext(regs_ext, "gpp_sid"))
    limits_ad_tracking = _flag(device.lmt) is True
    do_not_track = _flag(device.dnt) is True
    coppa_applies = coppa is True
    has_user_consent = not (
        coppa_applies
        or (gdpr is True
            and not tcf.allows_personalised_ads(consent, vendor_id=gdpr_vendor_id))
        or (len(us_privacy) >= 3 and us_privacy[2].upper() == "Y")
        or (bool(gpp_sid)
            and not allows_targeted_ads(gpp, gpp_sid, vendor_id=gdpr_vendor_id))
        or limits_ad_tracking
        or do_not_track)

    ifa = _text(device.ifa)
    user_id = ""
    if user is not None:
        user_id = _text(user.buyeruid) or _text(user.id)
    if not user_id and ifa not in _ZEROED_IFA:
        user_id = ifa

    site_page_is_https = page.lower().startswith("https://")
    return RequestView(
        request_id=str(request.id),
        tmax_ms=request.tmax if request.tmax is not None and request.tmax > 0 else None,
        auction_type=auction_type,
        currencies=_currencies(request.cur),
        is_test=_flag(request.test) is True,
        blocked_categories=frozenset(request.bcat or ()),
        allowed_categories=frozenset(request.acat or ()),
        category_taxonomy=(request.cattax if request.cattax is not None
                           else DEFAULT_CATEGORY_TAXONOMY),
        blocked_advertiser_domains=_lowered(request.badv),
        blocked_app_bundles=frozenset(request.bapp or ()),
        allowed_seats=frozenset(request.wseat or ()),
        blocked_seats=frozenset(request.bseat or ()),
        allowed_languages=_lowered(request.wlang),
        medium=medium,
        domain=domain,
        bundle=(app.bundle or "") if app is not None and medium == "app" else "",
        publisher_id=_text(publisher.id) if publisher is not None else "",
        page=page,
        content_categories=tuple(dict.fromkeys(categories)),
        device_type=DEVICE_TYPES.get(device.devicetype or 0, ""),
        os=_device_os(device),
        country=country,
        region=region_code(geo.region, country),
        city=geo.city or "",
        ip=device.ip or device.ipv6 or "",
        user_agent=device.ua or "",
        language=(device.language or "").strip().lower(),
        ifa=ifa,
        limits_ad_tracking=limits_ad_tracking,
        do_not_track=do_not_track,
        user_id=user_id,
        segments=frozenset(
            _text(segment.id)
            for data in ((user.data or ()) if user is not None else ())
            for segment in (data.segment or ()) if _text(segment.id)),
        external_ids=_external_ids(
            user.eids if user is not None and user.eids is not None
            else _convert(_ext(user_ext, "eids"), list[Eid])),
        coppa_applies=coppa_applies,
        gdpr_applies=gdpr,
        consent=consent,
        us_privacy=us_privacy,
        gpp=gpp,
        gpp_sid=gpp_sid,
        has_user_consent=has_user_consent,
        schain=_supply_chain(request),
        imps=tuple(_imp(imp, auction_type=auction_type, site_page_is_https=site_page_is_https)
                   for imp in request.imp),
    )


def _imp(imp: Imp, *, auction_type: int, site_page_is_https: bool) -> ImpView:
    pmp = imp.pmp
    return ImpView(
        imp_id=str(imp.id),
        banner=_banner(imp.banner) if imp.banner is not None else None,
        video=_video(imp.video) if imp.video is not None else None,
        audio=_audio(imp.audio) if imp.audio is not None else None,
        native=_native(imp.native) if imp.native is not None else None,
        floor=_money(imp.bidfloor),
        floor_currency=_currency(imp.bidfloorcur),
        # secure absent means unknown; an https page cannot show insecure assets anyway.
        is_secure=(_flag(imp.secure) is True if imp.secure is not None
                   else site_page_is_https),
        is_interstitial=_flag(imp.instl) is True,
        is_rewarded=_flag(imp.rwdd) is True,
        tag_id=_text(imp.tagid),
        deals=tuple(
            DealView(
                deal_id=str(deal.id),
                floor=_money(deal.bidfloor),
                floor_currency=_currency(deal.bidfloorcur),
                auction_type=deal.at if deal.at is not None else auction_type,
                allowed_seats=frozenset(deal.wseat or ()),
                allowed_advertiser_domains=_lowered(deal.wadomain),
                is_guaranteed=_flag(deal.guar) is True,
            )
            for deal in ((pmp.deals or ()) if pmp is not None else ())
            if str(deal.id)),
        is_private_auction=pmp is not None and _flag(pmp.private_auction) is True,
    )


def _banner(banner: Banner) -> BannerView:
    sizes = [(size.w, size.h) for size in banner.format or ()
             if size.w is not None and size.h is not None and size.w > 0 and size.h > 0]
    if not sizes and banner.w and banner.h and banner.w > 0 and banner.h > 0:
        sizes = [(banner.w, banner.h)]
    return BannerView(
        sizes=tuple(dict.fromkeys(sizes)),
        blocked_types=frozenset(banner.btype or ()),
        blocked_attributes=frozenset(banner.battr or ()),
        mimes=tuple(banner.mimes or ()),
        position=banner.pos,
    )


def _video(video: Video) -> VideoView:
    protocols = set(video.protocols or ())
    if isinstance(video.protocol, int):
        protocols.add(video.protocol)
    elif video.protocol is not None:
        protocols.update(video.protocol)
    return VideoView(
        mimes=tuple(video.mimes or ()),
        min_duration=video.minduration,
        max_duration=video.maxduration,
        required_durations=tuple(video.rqddurs or ()),
        protocols=frozenset(protocols),
        w=video.w,
        h=video.h,
        blocked_attributes=frozenset(video.battr or ()),
        plcmt=video.plcmt,
        placement=video.placement,
        pod_id=_text(video.podid),
        pod_duration=video.poddur,
        max_sequence=video.maxseq,
        min_cpm_per_second=_optional_money(video.mincpmpersec),
        duration_floors=_duration_floors(video.durfloors),
    )


def _audio(audio: Audio) -> AudioView:
    return AudioView(
        mimes=tuple(audio.mimes or ()),
        min_duration=audio.minduration,
        max_duration=audio.maxduration,
        required_durations=tuple(audio.rqddurs or ()),
        protocols=frozenset(audio.protocols or ()),
        blocked_attributes=frozenset(audio.battr or ()),
        min_cpm_per_second=_optional_money(audio.mincpmpersec),
        duration_floors=_duration_floors(audio.durfloors),
    )


def _duration_floors(
        ranges: list[DurFloors] | None) -> tuple[tuple[int | None, int | None, Decimal], ...]:
    """The ranges that bound at least one end (the spec requires one)."""
    return tuple((floor.mindur, floor.maxdur, _money(floor.bidfloor)) for floor in ranges or ()
                 if floor.mindur is not None or floor.maxdur is not None)


def _native(native: Native) -> NativeView:
    request = native.request
    if isinstance(request, dict):
        request = msgspec.json.encode(request).decode()
    return NativeView(request=request or "", version=native.ver or "",
                      blocked_attributes=frozenset(native.battr or ()))


class _NativeTitle(msgspec.Struct, omit_defaults=True):
    len: int | None = None


class _NativeImage(msgspec.Struct, omit_defaults=True):
    type: int | None = None
    w: int | None = None
    h: int | None = None
    wmin: int | None = None
    hmin: int | None = None


class _NativeData(msgspec.Struct, omit_defaults=True):
    type: int | None = None
    len: int | None = None


class _NativeAsset(msgspec.Struct, omit_defaults=True):
    """The parts of a Native 1.x request asset the bidder reads, typed: an asset of the
    wrong shape makes the whole request unreadable, never an error while building markup."""

    id: int | None = None
    required: int | None = None
    title: _NativeTitle | None = None
    img: _NativeImage | None = None
    data: _NativeData | None = None
    video: dict[str, Any] | None = None


def native_request_assets(native: NativeView) -> list[dict[str, Any]]:
    """The `assets` of a Native 1.x request, [] when it has none or is not readable (not
    JSON, or an asset of the wrong shape): such a request cannot be answered.

    Native 1.0 wraps the payload in {"native": {...}}; 1.1 and later do not.
    """
    return list(_native_assets(native.request))


@lru_cache(maxsize=256)
def _native_assets(request: str) -> tuple[dict[str, Any], ...]:
    """Decoded once per distinct payload: every candidate of an impression reads it."""
    try:
        payload = msgspec.json.decode(request)
        if isinstance(payload, dict) and isinstance(payload.get("native"), dict):
            payload = payload["native"]
        assets = payload.get("assets") if isinstance(payload, dict) else None
        typed = (msgspec.convert(assets, list[_NativeAsset], strict=False)
                 if isinstance(assets, list) else [])
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ()
    return tuple(msgspec.to_builtins(asset) for asset in typed)


def _supply_chain(request: BidRequest) -> SupplyChainView | None:
    source = request.source
    if source is None:
        return None
    chain = source.schain
    if chain is None:
        chain = _convert(_ext(source.ext, "schain"), SupplyChain)
    if chain is None:
        return None
    return SupplyChainView(
        is_complete=_flag(chain.complete) is True,
        nodes=tuple((node.asi or "", _text(node.sid)) for node in chain.nodes or ()))


def _external_ids(eids: list[Eid] | None) -> tuple[ExternalId, ...]:
    return tuple(ExternalId(source=eid.source or "", id=_text(uid.id), agent_type=uid.atype)
                 for eid in eids or ()
                 for uid in eid.uids or () if _text(uid.id))


def _device_os(device: Device) -> str:
    """Our OS word for the device: "" when unknown, "other" when named but not ours."""
    name = device.os
    if not name and device.sua is not None and device.sua.platform is not None:
        name = device.sua.platform.brand
    return os_name(name or "")


def _flag(value: object) -> bool | None:
    """0/1 flags as sent by anyone: ints, booleans, or in an `ext`, strings.

    Any number but 0 counts as set: for privacy, security and test flags that is the cautious
    reading of a value the spec does not define.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip() in {"0", "1", "true", "false"}:
        return value.strip() in {"1", "true"}
    return None


def _ext(ext: object, key: str) -> Any:
    return ext.get(key) if isinstance(ext, dict) else None


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


def _first_text(preferred: str | None, fallback: object) -> str:
    if preferred is not None:
        return preferred
    return fallback if isinstance(fallback, str) else ""


def _gpp_sections(raw: object) -> tuple[int, ...]:
    if isinstance(raw, str):  # "7,8" from some 2.5 senders
        raw = [part.strip() for part in raw.split(",")]
    if not isinstance(raw, list):
        return ()
    sections = []
    for item in raw:
        if isinstance(item, int) and not isinstance(item, bool):
            sections.append(item)
        elif isinstance(item, str) and item.isascii() and item.isdigit():
            sections.append(int(item))
    return tuple(sections)


def _currency(value: str | None) -> str:
    return (value or "").strip().upper() or DEFAULT_CURRENCY


def _currencies(values: list[str] | None) -> tuple[str, ...]:
    currencies = tuple(dict.fromkeys(
        currency.strip().upper() for currency in values or () if currency.strip()))
    return currencies or (DEFAULT_CURRENCY,)


def _lowered(values: list[str] | None) -> frozenset[str]:
    return frozenset(value.strip().lower() for value in values or ())


def _money(value: Decimal | None) -> Decimal:
    """A floor: absent, negative or not a number (a "NaN" string) means no floor."""
    if value is None or not value.is_finite() or value < 0:
        return _ZERO
    return value


def _optional_money(value: Decimal | None) -> Decimal | None:
    return None if value is None else _money(value)


def _convert(raw: object, target: Any) -> Any:
    if raw is None:
        return None
    try:
        return msgspec.convert(raw, target, strict=False)
    except msgspec.ValidationError:
        return None
