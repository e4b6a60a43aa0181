"""Demo data for a first look: two advertisers, campaigns in every state, creatives, users.

Built through the services, so the workflow rules and the audit log apply to it as to real
data. Idempotent: what exists is left alone, and passwords are only set (and returned) when a
user is first created.
"""

from __future__ import annotations

import io
import secrets
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.utils import timezone
from PIL import Image, ImageDraw

from campaigns import exchanges, services
from campaigns.models import Advertiser, Campaign, Creative, Exchange
from campaigns.roles import APPROVER, MARKETER, OPS, roles_sync
from dsp.demo import dsp_demo_seed
from loyalty.demo import loyalty_demo_seed

User = get_user_model()


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    password: str | None  # None when the user already existed


USERS = [("ops", OPS), ("approver", APPROVER), ("marketer", MARKETER),
         ("marketer2", MARKETER)]

ADVERTISERS = [
    {"name": "Northwind Coffee", "domain": "northwindcoffee.example", "currency": "USD",
     "time_zone": "America/New_York", "marketer": "marketer"},
    {"name": "Contoso Hotels", "domain": "contosohotels.example", "currency": "EUR",
     "time_zone": "Europe/Berlin", "marketer": "marketer2"},
]

# name, advertiser, final status, creative formats, targeting
CAMPAIGNS = [
    ("Morning Rush", "Northwind Coffee", "active", ["banner", "banner", "native"],
     {"countries": ["USA", "CAN"], "device_types": ["phone", "tablet"],
      "dayparts": {day: list(range(6, 11)) for day in ("mon", "tue", "wed", "thu", "fri")},
      "categories": ["IAB8"], "loyalty_tiers": ["gold", "reserve"]}),
    ("Holiday Blend Launch", "Northwind Coffee", "approved", ["video", "banner"],
     {"countries": ["USA"], "device_types": ["desktop", "ctv"]}),
    ("Cold Brew Summer", "Northwind Coffee", "paused", ["banner", "native"],
     {"countries": ["USA"], "regions": ["US-CA", "US-TX"]}),
    ("Loyalty Double Stars", "Northwind Coffee", "in_review", ["native"],
     {"loyalty_tiers": ["green", "gold", "reserve"], "segments": ["coffee_lovers"]}),
    ("Pumpkin Spice Teaser", "Northwind Coffee", "draft", ["banner"], {}),
    # Bids on most traffic: common banner sizes, video and native, sites and apps, in the
    # countries of the README's sample request and the OpenRTB corpus.
    ("Coffee Everywhere", "Northwind Coffee", "active",
     ["banner:300x250", "banner:728x90", "banner:320x50", "banner:300x600", "video", "native"],
     {"countries": ["USA", "CAN", "GBR", "DEU", "FRA", "ESP", "ITA", "NLD", "AUS", "BRA"]}),
    ("Weekend Getaways", "Contoso Hotels", "active", ["video", "banner", "native"],
     {"countries": ["DEU", "FRA", "NLD"], "site_domains_block": ["tabloid.example"]}),
    ("Business Travel Q4", "Contoso Hotels", "completed", ["banner"],
     {"countries": ["DEU", "GBR"], "device_types": ["desktop"]}),
    ("Spa Retreats", "Contoso Hotels", "rejected", ["video"], {"countries": ["AUT"]}),
    ("Summer 2025 Archive", "Contoso Hotels", "archived", ["banner"], {}),
]

# The workflow actions that lead from draft to each final status.
PATHS = {
    "draft": [], "in_review": ["submit"], "rejected": ["submit", "reject"],
    "approved": ["submit", "approve"], "active": ["submit", "approve", "activate"],
    "paused": ["submit", "approve", "activate", "pause"],
    "completed": ["submit", "approve", "activate", "complete"],
    "archived": ["submit", "approve", "activate", "complete", "archive"],
}


def _banner_png(text: str, size: tuple[int, int] = (300, 250)) -> bytes:
    image = Image.new("RGB", size, (32, 96, 160))
    ImageDraw.Draw(image).text((16, size[1] // 2 - 8), text, fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _vast(name: str) -> str:
    return ('<VAST version="3.0"><Ad id="demo"><InLine><AdSystem>Campaign Express</AdSystem>'
            f"<AdTitle>{name}</AdTitle><Creatives><Creative><Linear><Duration>00:00:15"
            "</Duration><MediaFiles><MediaFile delivery=\"progressive\" type=\"video/mp4\" "
            'width="640" height="360">https://cdn.example/demo.mp4</MediaFile></MediaFiles>'
            "</Linear></Creative></Creatives></InLine></Ad></VAST>")


def _creative_data(campaign: Campaign, format_: str, index: int) -> dict:
    domain = campaign.advertiser.domain
    format_, _, size = format_.partition(":")
    name = f"{campaign.name} {format_} {size or index}"
    data = {"campaign": campaign, "name": name, "format": format_, "adomain": domain,
            "click_url": f"https://{domain}/offers?c={campaign.pk}"}
    if format_ == "banner":
        width, height = (int(side) for side in (size or "300x250").split("x"))
        data.update(sizes=[f"{width}x{height}"], asset=SimpleUploadedFile(
            f"demo-{campaign.pk}-{index}.png", _banner_png(name, (width, height)),
            content_type="image/png"))
    elif format_ == "video":
        data.update(sizes=["640x360"], markup=_vast(name), mimes=["video/mp4"], protocols=[2, 3],
                    duration_seconds=15)
    else:
        data.update(markup='{"native":{"assets":[{"id":1,"title":{"text":"' + name + '"}}]}}')
    return data


def _users() -> tuple[dict[str, User], list[DemoUser]]:
    users, created = {}, []
    for username, role in USERS:
        user = User.objects.filter(username=username).first()
        password = None
        if user is None:
            password = secrets.token_urlsafe(9)
            user = User.objects.create_user(username=username, password=password,
                                            email=f"{username}@campaign-express.example",
                                            is_staff=True)
            user.groups.add(Group.objects.get(name=role))
        users[username] = user
        created.append(DemoUser(username, role, password))
    return users, created


@transaction.atomic
def demo_seed() -> list[DemoUser]:
    roles_sync()
    users, demo_users = _users()
    ops, approver = users["ops"], users["approver"]
    now = timezone.now()
    _demo_exchange(ops)
    for spec in ADVERTISERS:
        advertiser = Advertiser.objects.filter(name=spec["name"]).first()
        if advertiser is None:
            data = {k: v for k, v in spec.items() if k != "marketer"}
            advertiser = services.advertiser_create(actor=ops, data=data,
                                                    marketers=[users[spec["marketer"]]])
    loyalty_demo_seed(actor=ops)  # before the campaigns: they target its tiers
    dsp_demo_seed(actor=ops)
    for name, advertiser_name, status, formats, targeting in CAMPAIGNS:
        advertiser = Advertiser.objects.get(name=advertiser_name)
        if Campaign.objects.filter(advertiser=advertiser, name=name).exists():
            continue
        marketer = advertiser.marketers.first()
        campaign = services.campaign_create(actor=marketer, data={
            "advertiser": advertiser, "name": name,
            # The approved one starts next week, so the scheduler leaves it approved for now.
            "start_at": now + timedelta(days=7 if status == "approved" else -3),
            "end_at": now + timedelta(days=60),
            "total_budget": Decimal("50000"), "daily_budget": Decimal("1500"),
            "base_bid_cpm": Decimal("2.50"), "max_bid_cpm": Decimal("8.00"),
            "frequency_cap_hour": 2, "frequency_cap_day": 6, "frequency_cap_lifetime": 40,
            **targeting})
        for index, format_ in enumerate(formats, start=1):
            creative = services.creative_create(actor=marketer,
                                                data=_creative_data(campaign, format_, index))
            if status not in ("draft", "in_review"):
                services.creative_review(creative=creative, actor=approver,
                                         approve=status != "rejected",
                                         note="" if status != "rejected"
                                         else "Claims need substantiation")
        for action in PATHS[status]:
            actor = approver if action in ("approve", "reject") else marketer
            note = "Claims in the video need substantiation" if action == "reject" else ""
            services.campaign_transition(campaign=campaign, actor=actor, action=action,
                                         note=note)
    return demo_users


def demo_counts() -> dict[str, int]:
    return {"advertisers": Advertiser.objects.count(), "campaigns": Campaign.objects.count(),
            "creatives": Creative.objects.count()}


def _demo_exchange(ops: User) -> None:
    """The default exchange: no credentials, so the README's sample request gets a bid."""
    if not Exchange.objects.filter(slug="demo").exists():
        exchanges.exchange_create(actor=ops, data={
            "name": "Demo exchange", "slug": "demo", "seat": "campaign-express",
            "is_default": True, "auth": "none", "currency": "USD", "no_bid_style": "204"})
