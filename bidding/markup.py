"""Ad markup built from a creative: HTML for banners, VAST 4 for video and audio, the Native
1.2 response for native. Third-party markup is passed through as the marketer gave it.

The URLs passed in (click, impression, tracking) are ours; they reach the exchange inside
the markup, where the spec's macros (`${AUCTION_PRICE}`, ...) are substituted, so they are
written unescaped in URLs and escaped only as XML or HTML requires.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from bidding.snapshot import CreativeEntry

OUR_VAST_PROTOCOLS = frozenset({7})  # VAST 4.0 inline: what `vast` writes
VAST_EVENTS = ("start", "firstQuartile", "midpoint", "thirdQuartile", "complete")


def banner_html(creative: CreativeEntry, *, width: int, height: int, click_url: str,
                impression_url: str) -> str:
    if creative.markup:
        return creative.markup + _pixel(impression_url)
    return (f'<a href="{escape(click_url)}" target="_blank" rel="noopener">'
            f'<img src="{escape(creative.asset_url)}" width="{width}" height="{height}" '
            f'alt="{escape(creative.name)}" style="border:0;display:block"></a>'
            + _pixel(impression_url))


def _pixel(url: str) -> str:
    return (f'<img src="{escape(url)}" width="1" height="1" alt="" '
            'style="position:absolute;left:-9999px">')


def vast(creative: CreativeEntry, *, ad_id: str, click_url: str, impression_url: str,
         tracking_url: str, width: int = 0, height: int = 0) -> str:
    """A VAST 4.0 InLine ad; third-party VAST passes through unchanged."""
    if creative.markup:
        return creative.markup
    duration = creative.duration_seconds or 0
    clock = f"{duration // 3600:02d}:{duration % 3600 // 60:02d}:{duration % 60:02d}.000"
    mime = creative.mimes[0] if creative.mimes else (
        "video/mp4" if creative.format == "video" else "audio/mpeg")
    size = f' width="{width}" height="{height}"' if creative.format == "video" else ""
    events = "".join(
        f'<Tracking event="{event}"><![CDATA[{tracking_url}&event={event}]]></Tracking>'
        for event in VAST_EVENTS)
    clicks = (f"<VideoClicks><ClickThrough><![CDATA[{click_url}]]></ClickThrough>"
              "</VideoClicks>") if creative.format == "video" else ""
    return (
        f'<VAST version="4.0"><Ad id="{xml_escape(ad_id)}"><InLine>'
        "<AdSystem>Campaign Express</AdSystem>"
        f"<AdTitle>{xml_escape(creative.name)}</AdTitle>"
        f"<Impression><![CDATA[{impression_url}]]></Impression>"
        f'<Creatives><Creative id="{creative.id}"><Linear><Duration>{clock}</Duration>'
        f"<TrackingEvents>{events}</TrackingEvents>{clicks}"
        f'<MediaFiles><MediaFile delivery="progressive" type="{xml_escape(mime)}"{size}>'
        f"<![CDATA[{creative.asset_url}]]></MediaFile></MediaFiles>"
        "</Linear></Creative></Creatives></InLine></Ad></VAST>")


def native_response(creative: CreativeEntry, *, request_assets: list[dict[str, Any]],
                    click_url: str, impression_url: str, version: str = "1.2") -> str:
    """The Native response for the assets the request asked for (`native_assets`); "" when
    a required one cannot be filled (eligibility refuses such a creative first).

    For a request of ``version`` 1.0, the 1.0 shape: the response under a "native" key, the
    impression tracked by `imptrackers`. Otherwise the 1.2 shape, whose root is the response
    itself (Native 1.2, section 5.1) and whose impression tracker is an event tracker.
    """
    if creative.markup:
        return creative.markup
    assets = native_assets(creative, request_assets)
    if assets is None:
        return ""
    link = {"url": click_url}
    if version.startswith("1.0"):
        return json.dumps({"native": {"ver": "1.0", "assets": assets, "link": link,
                                      "imptrackers": [impression_url]}},
                          separators=(",", ":"))
    return json.dumps({"ver": "1.2", "assets": assets, "link": link,
                       "eventtrackers": [{"event": 1, "method": 1, "url": impression_url}]},
                      separators=(",", ":"))


def native_assets(creative: CreativeEntry,
                  request_assets: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The response assets of our own native markup, or None when the creative cannot fill a
    required one (third-party markup is the marketer's: not checked here).

    Title assets get the creative's name, image assets its asset, data assets (sponsored-by,
    description) the landing domain and name. An optional asset we cannot fill is left out.
    """
    assets = []
    for asset in request_assets:
        asset_id = asset.get("id")
        filled: dict[str, Any] | None = None
        if "title" in asset:
            filled = {"title": {"text": creative.name[:asset["title"].get("len", 90) or 90]}}
        elif "img" in asset and creative.asset_url:
            image = asset["img"]
            width = image.get("w") or image.get("wmin") or 0
            height = image.get("h") or image.get("hmin") or 0
            filled = {"img": {"url": creative.asset_url, "w": width, "h": height}}
        elif "data" in asset:
            data_type = asset["data"].get("type")
            value = creative.adomain if data_type == 1 else creative.name
            if value:
                filled = {"data": {"value": value}}
        if filled is None:
            if asset.get("required"):
                return None
            continue
        assets.append({"id": asset_id, **filled})
    return assets
