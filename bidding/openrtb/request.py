"""The OpenRTB 2.5/2.6 bid request as msgspec structs, and the one way to decode it.

Only what the spec requires is required (`BidRequest.id`, a non-empty `imp`, `Imp.id`);
everything else is optional and `None` when absent, because an absent attribute means
"unknown" (§2.3) and defaults belong to `normalize`, which applies the spec's defaults in
one place. Unknown fields are ignored and enumerations are plain ints, so a value added by a
later 2.6 release never rejects a request (§2.6).

Real exchanges are sloppy, so decoding is lenient where the corpus shows it has to be:
numbers sent as strings (`"w": "728"`) are accepted (msgspec's non-strict mode), 0/1 flags
may be booleans, ids may be numbers, `native.request` may be an object instead of a JSON
string, and `ext` may hold anything (one sender puts a string there). Money (`bidfloor`,
`mincpmpersec`) is decoded straight from the JSON text into `Decimal`, never through a float.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import msgspec

# A body above this is refused before parsing: the largest request in our corpus is under
# 8 KiB, and a cap keeps one hostile request from costing the bid path real memory and time.
MAX_BODY_BYTES = 256 * 1024

# 0/1 flags: most senders use ints, some booleans.
Flag = int | bool
# Ids are strings in the spec; some senders use numbers. `normalize` turns them into str.
Id = str | int


class InvalidRequest(ValueError):
    """The body is not an OpenRTB bid request we can read.

    Without a ``request_id`` (not JSON, no `id`, no `imp`, over the size limit) the answer
    is 400 (§2.1). With one, the request names itself and its impressions but breaks the
    spec further in (a field of the wrong type, an id with control characters): it gets a
    no-bid with nbr 2, like any other request we do not bid on.
    """

    def __init__(self, reason: str, *, request_id: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.request_id = request_id


class _Envelope(msgspec.Struct):
    """Just enough of a request to answer it with a no-bid."""

    id: Id
    imp: list[Any]


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class _Object(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=True):
    pass


class Format(_Object):
    w: int | None = None
    h: int | None = None
    wratio: int | None = None
    hratio: int | None = None
    wmin: int | None = None
    ext: Any = None


class Banner(_Object):
    format: list[Format] | None = None
    w: int | None = None
    h: int | None = None
    btype: list[int] | None = None
    battr: list[int] | None = None
    pos: int | None = None
    mimes: list[str] | None = None
    topframe: Flag | None = None
    expdir: list[int] | None = None
    api: list[int] | None = None
    id: Id | None = None
    vcm: Flag | None = None
    ext: Any = None


class DurFloors(_Object):
    """2.6: the floor for creatives of a duration range (seconds, both ends included; a
    missing end is unbounded)."""

    mindur: int | None = None
    maxdur: int | None = None
    bidfloor: Decimal | None = None
    ext: Any = None


class Video(_Object):
    mimes: list[str] | None = None
    minduration: int | None = None
    maxduration: int | None = None
    rqddurs: list[int] | None = None
    startdelay: int | None = None
    protocols: list[int] | None = None
    protocol: int | list[int] | None = None  # 2.2, deprecated; some send a list here too
    w: int | None = None
    h: int | None = None
    plcmt: int | None = None
    placement: int | None = None  # deprecated in 2.6-202303 for plcmt
    linearity: int | None = None
    skip: Flag | None = None
    battr: list[int] | None = None
    pos: int | None = None
    podid: Id | None = None
    podseq: int | None = None
    poddur: int | None = None
    maxseq: int | None = None
    slotinpod: int | None = None
    mincpmpersec: Decimal | None = None
    durfloors: list[DurFloors] | None = None
    playbackmethod: list[int] | None = None
    delivery: list[int] | None = None
    api: list[int] | None = None
    ext: Any = None


class Audio(_Object):
    mimes: list[str] | None = None
    minduration: int | None = None
    maxduration: int | None = None
    rqddurs: list[int] | None = None
    protocols: list[int] | None = None
    startdelay: int | None = None
    battr: list[int] | None = None
    podid: Id | None = None
    poddur: int | None = None
    maxseq: int | None = None
    mincpmpersec: Decimal | None = None
    durfloors: list[DurFloors] | None = None
    delivery: list[int] | None = None
    api: list[int] | None = None
    feed: int | None = None
    ext: Any = None


class Native(_Object):
    # §3.2.9: a JSON-encoded string; some senders put the object itself here.
    request: str | dict[str, Any] | None = None
    ver: str | None = None
    api: list[int] | None = None
    battr: list[int] | None = None
    ext: Any = None


class Deal(_Object):
    id: Id
    bidfloor: Decimal | None = None
    bidfloorcur: str | None = None  # defaults to USD; never inherits imp.bidfloorcur
    at: int | None = None
    wseat: list[str] | None = None
    wadomain: list[str] | None = None
    guar: Flag | None = None
    mincpmpersec: Decimal | None = None
    ext: Any = None


class Pmp(_Object):
    private_auction: Flag | None = None
    deals: list[Deal] | None = None
    ext: Any = None


class Qty(_Object):
    multiplier: float | None = None
    sourcetype: int | None = None
    vendor: str | None = None
    ext: Any = None


class Imp(_Object):
    id: Id
    banner: Banner | None = None
    video: Video | None = None
    audio: Audio | None = None
    native: Native | None = None
    pmp: Pmp | None = None
    displaymanager: str | None = None
    displaymanagerver: str | None = None
    instl: Flag | None = None
    tagid: Id | None = None
    bidfloor: Decimal | None = None
    bidfloorcur: str | None = None
    clickbrowser: Flag | None = None
    secure: Flag | None = None
    rwdd: Flag | None = None
    ssai: int | None = None
    exp: int | None = None
    qty: Qty | None = None
    dt: float | None = None
    ext: Any = None


class Publisher(_Object):
    id: Id | None = None
    name: str | None = None
    domain: str | None = None
    cat: list[str] | None = None
    ext: Any = None


class Content(_Object):
    id: Id | None = None
    title: str | None = None
    cat: list[str] | None = None
    language: str | None = None
    livestream: Flag | None = None
    len: int | None = None
    ext: Any = None


class Site(_Object):
    id: Id | None = None
    name: str | None = None
    domain: str | None = None
    page: str | None = None
    ref: str | None = None
    cat: list[str] | None = None
    sectioncat: list[str] | None = None
    pagecat: list[str] | None = None
    cattax: int | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    mobile: Flag | None = None
    ext: Any = None


class App(_Object):
    id: Id | None = None
    name: str | None = None
    bundle: str | None = None
    domain: str | None = None
    storeurl: str | None = None
    cat: list[str] | None = None
    sectioncat: list[str] | None = None
    pagecat: list[str] | None = None
    cattax: int | None = None
    ver: str | None = None
    paid: Flag | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    ext: Any = None


class Dooh(_Object):
    id: Id | None = None
    name: str | None = None
    venuetype: list[str] | None = None
    venuetypetax: int | None = None
    domain: str | None = None
    publisher: Publisher | None = None
    content: Content | None = None
    ext: Any = None


class Geo(_Object):
    lat: float | None = None
    lon: float | None = None
    type: int | None = None
    country: str | None = None
    region: str | None = None
    metro: str | None = None
    city: str | None = None
    zip: str | None = None
    utcoffset: int | None = None
    ext: Any = None


class BrandVersion(_Object):
    brand: str | None = None
    version: list[str] | None = None
    ext: Any = None


class UserAgent(_Object):
    browsers: list[BrandVersion] | None = None
    platform: BrandVersion | None = None
    mobile: Flag | None = None
    architecture: str | None = None
    bitness: str | None = None
    model: str | None = None
    source: int | None = None
    ext: Any = None


class Device(_Object):
    ua: str | None = None
    sua: UserAgent | None = None
    ip: str | None = None
    ipv6: str | None = None
    geo: Geo | None = None
    dnt: Flag | None = None
    lmt: Flag | None = None
    devicetype: int | None = None
    make: str | None = None
    model: str | None = None
    os: str | None = None
    osv: str | None = None
    w: int | None = None
    h: int | None = None
    ifa: str | None = None
    language: str | None = None
    langb: str | None = None
    carrier: str | None = None
    connectiontype: int | None = None
    ext: Any = None


class Segment(_Object):
    id: Id | None = None
    name: str | None = None
    value: str | None = None
    ext: Any = None


class Data(_Object):
    id: Id | None = None
    name: str | None = None
    segment: list[Segment] | None = None
    ext: Any = None


class Uid(_Object):
    id: Id | None = None
    atype: int | None = None
    ext: Any = None


class Eid(_Object):
    source: str | None = None
    inserter: str | None = None
    matcher: str | None = None
    mm: int | None = None
    uids: list[Uid] | None = None
    ext: Any = None


class User(_Object):
    id: Id | None = None
    buyeruid: Id | None = None
    yob: int | None = None
    gender: str | None = None
    keywords: str | list[str] | None = None
    customdata: str | None = None
    geo: Geo | None = None
    data: list[Data] | None = None
    consent: str | None = None
    eids: list[Eid] | None = None
    ext: Any = None


class SupplyChainNode(_Object):
    # asi and sid are required by the spec; a node without them is kept (and fails the schain
    # policy later) rather than rejecting the whole request.
    asi: str | None = None
    sid: Id | None = None
    rid: str | None = None
    name: str | None = None
    domain: str | None = None
    hp: Flag | None = None
    ext: Any = None


class SupplyChain(_Object):
    complete: Flag | None = None
    nodes: list[SupplyChainNode] | None = None
    ver: str | None = None
    ext: Any = None


class Source(_Object):
    fd: int | None = None
    tid: str | None = None
    pchain: str | None = None
    schain: SupplyChain | None = None
    ext: Any = None


class Regs(_Object):
    coppa: Flag | None = None
    gdpr: Flag | None = None
    us_privacy: str | None = None
    gpp: str | None = None
    gpp_sid: list[int] | None = None
    ext: Any = None


class BidRequest(_Object):
    id: Id
    imp: list[Imp]
    site: Site | None = None
    app: App | None = None
    dooh: Dooh | None = None
    device: Device | None = None
    user: User | None = None
    source: Source | None = None
    regs: Regs | None = None
    test: Flag | None = None
    at: int | None = None
    tmax: int | None = None
    wseat: list[str] | None = None
    bseat: list[str] | None = None
    allimps: Flag | None = None
    cur: list[str] | None = None
    wlang: list[str] | None = None
    wlangb: list[str] | None = None
    bcat: list[str] | None = None
    acat: list[str] | None = None
    cattax: int | None = None
    badv: list[str] | None = None
    bapp: list[str] | None = None
    ext: Any = None


_DECODER = msgspec.json.Decoder(BidRequest, strict=False)


def decode_request(body: bytes, *, max_bytes: int = MAX_BODY_BYTES) -> BidRequest:
    """Decode a bid request body, or raise `InvalidRequest` with the reason.

    Nothing else escapes: invalid JSON, a wrong type, a missing or empty `id`, a missing or
    empty `imp`, an imp without an id, an id with a control character, a body over
    `max_bytes` and nesting too deep to parse all become `InvalidRequest`. The transport
    answers 400 and no body, or a no-bid when the error carries the request's id.
    """
    if len(body) > max_bytes:
        raise InvalidRequest(f"body is {len(body)} bytes, over the limit of {max_bytes}")
    try:
        request = _DECODER.decode(body)
    except msgspec.ValidationError as error:
        raise InvalidRequest(f"not a bid request: {error}",
                             request_id=_answerable_id(body)) from None
    except msgspec.DecodeError as error:
        raise InvalidRequest(f"invalid JSON: {error}") from None
    except RecursionError:
        raise InvalidRequest("invalid JSON: nested too deeply") from None
    if request.id == "":
        raise InvalidRequest("id is empty")
    if not request.imp:
        raise InvalidRequest("imp is empty")
    request_id = str(request.id)
    for position, imp in enumerate(request.imp):
        if imp.id == "":
            raise InvalidRequest(f"imp[{position}].id is empty", request_id=request_id)
        if isinstance(imp.id, str) and _CONTROL_CHARACTER.search(imp.id):
            raise InvalidRequest(f"imp[{position}].id holds a control character",
                                 request_id=request_id)
    if _CONTROL_CHARACTER.search(request_id):
        # Ids travel in our signed notice URLs, whose signature could not tell them apart.
        raise InvalidRequest("id holds a control character", request_id=request_id)
    return request


def _answerable_id(body: bytes) -> str:
    """The request's id when the body has an `id` and a non-empty `imp` list."""
    try:
        envelope = _ENVELOPE.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return ""
    return str(envelope.id) if envelope.imp else ""
