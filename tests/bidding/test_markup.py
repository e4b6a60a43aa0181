import json
import xml.etree.ElementTree as ElementTree

from bidding.markup import banner_html, native_response, vast
from bidding.snapshot import CreativeEntry

BANNER = CreativeEntry(id=7, name="Autumn <Roast>", format="banner", sizes=((300, 250),),
                       asset_url="https://cdn.example/a.png", adomain="roast.example")
VIDEO = CreativeEntry(id=8, name="Trailer & more", format="video", sizes=((640, 360),),
                      asset_url="https://cdn.example/t.mp4", mimes=("video/mp4",),
                      protocols=(2, 3, 7), duration_seconds=75)
AUDIO = CreativeEntry(id=9, name="Jingle", format="audio", asset_url="https://cdn.example/j.mp3",
                      mimes=("audio/mpeg",), protocols=(2,), duration_seconds=30)
NATIVE = CreativeEntry(id=10, name="Weekend in Lisbon", format="native",
                       asset_url="https://cdn.example/l.jpg", adomain="hotels.example")


def test_a_banner_links_its_image_to_the_click_url_and_carries_the_impression_pixel():
    html = banner_html(BANNER, width=300, height=250,
                       click_url="https://ce.example/v1/click/x?a=1&b=2",
                       impression_url="https://ce.example/v1/imp/x?p=${AUCTION_PRICE}")
    assert html == (
        '<a href="https://ce.example/v1/click/x?a=1&amp;b=2" target="_blank" rel="noopener">'
        '<img src="https://cdn.example/a.png" width="300" height="250" '
        'alt="Autumn &lt;Roast&gt;" style="border:0;display:block"></a>'
        '<img src="https://ce.example/v1/imp/x?p=${AUCTION_PRICE}" width="1" height="1" '
        'alt="" style="position:absolute;left:-9999px">')


def test_third_party_banner_markup_passes_through_with_our_pixel():
    tag = CreativeEntry(id=1, name="Tag", format="banner", markup="<script src=x></script>")
    assert banner_html(tag, width=1, height=1, click_url="c", impression_url="i") == (
        '<script src=x></script><img src="i" width="1" height="1" alt="" '
        'style="position:absolute;left:-9999px">')


def test_video_becomes_a_vast_4_inline_ad_with_our_impression_and_tracking_events():
    document = vast(VIDEO, ad_id="bid-1", click_url="https://ce.example/c?x=1&y=2",
                    impression_url="https://ce.example/i?p=${AUCTION_PRICE}",
                    tracking_url="https://ce.example/t?b=1", width=640, height=360)
    root = ElementTree.fromstring(document)
    assert (root.tag, root.get("version")) == ("VAST", "4.0")
    inline = root.find("Ad/InLine")
    assert inline.findtext("AdTitle") == "Trailer & more"
    assert inline.findtext("Impression") == "https://ce.example/i?p=${AUCTION_PRICE}"
    linear = inline.find("Creatives/Creative/Linear")
    assert linear.findtext("Duration") == "00:01:15.000"
    assert [(t.get("event"), t.text) for t in linear.findall("TrackingEvents/Tracking")] == [
        (event, f"https://ce.example/t?b=1&event={event}")
        for event in ("start", "firstQuartile", "midpoint", "thirdQuartile", "complete")]
    assert linear.findtext("VideoClicks/ClickThrough") == "https://ce.example/c?x=1&y=2"
    media = linear.find("MediaFiles/MediaFile")
    assert (media.get("type"), media.get("width"), media.get("height"), media.text) == (
        "video/mp4", "640", "360", "https://cdn.example/t.mp4")


def test_audio_vast_has_no_size_and_no_click_through():
    root = ElementTree.fromstring(vast(AUDIO, ad_id="b", click_url="c", impression_url="i",
                                       tracking_url="t?"))
    linear = root.find("Ad/InLine/Creatives/Creative/Linear")
    media = linear.find("MediaFiles/MediaFile")
    assert (media.get("type"), media.get("width")) == ("audio/mpeg", None)
    assert linear.find("VideoClicks") is None
    assert linear.findtext("Duration") == "00:00:30.000"


def test_native_fills_the_requested_assets():
    request_assets = [{"id": 1, "required": 1, "title": {"len": 10}},
                      {"id": 2, "img": {"type": 3, "w": 1200, "h": 627}},
                      {"id": 3, "data": {"type": 1}},
                      {"id": 4, "video": {"mimes": ["video/mp4"]}}]
    body = json.loads(native_response(NATIVE, request_assets=request_assets,
                                      click_url="https://ce.example/c",
                                      impression_url="https://ce.example/i"))
    assert body == {
        "ver": "1.2",
        "assets": [{"id": 1, "title": {"text": "Weekend in"}},
                   {"id": 2, "img": {"url": "https://cdn.example/l.jpg", "w": 1200, "h": 627}},
                   {"id": 3, "data": {"value": "hotels.example"}}],
        "link": {"url": "https://ce.example/c"},
        "eventtrackers": [{"event": 1, "method": 1, "url": "https://ce.example/i"}]}


def test_a_native_1_0_request_gets_the_1_0_response_shape():
    body = json.loads(native_response(NATIVE, request_assets=[{"id": 3, "data": {"type": 1}}],
                                      click_url="https://ce.example/c",
                                      impression_url="https://ce.example/i", version="1.0"))
    assert body == {"native": {
        "ver": "1.0",
        "assets": [{"id": 3, "data": {"value": "hotels.example"}}],
        "link": {"url": "https://ce.example/c"},
        "imptrackers": ["https://ce.example/i"]}}


def test_native_without_a_required_asset_it_cannot_fill_is_empty():
    assert native_response(NATIVE, request_assets=[
        {"id": 1, "required": 1, "video": {"mimes": ["video/mp4"]}}],
        click_url="c", impression_url="i") == ""
