"""Factories and fixtures for the campaigns app: users in each role, two advertisers.

Factories write straight to the database (no services, no audit entries), so a test states
exactly the starting point it needs and every audit entry it asserts comes from the code under
test.
"""

from __future__ import annotations

import datetime
import io
from decimal import Decimal

import factory
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models.fields.files import FieldFile
from django.forms import MultiWidget
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from campaigns.models import Advertiser, Campaign, Creative
from campaigns.roles import APPROVER, MARKETER, OPS

User = get_user_model()
PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@campaign-express.example")
    password = factory.django.Password(PASSWORD)
    is_staff = True

    @factory.post_generation
    def role(self, create: bool, extracted: str | None, **kwargs) -> None:
        if create and extracted:
            self.groups.add(Group.objects.get(name=extracted))


class AdvertiserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Advertiser
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Advertiser {n}")
    domain = factory.Sequence(lambda n: f"advertiser{n}.example")

    @factory.post_generation
    def marketers(self, create: bool, extracted: list | None, **kwargs) -> None:
        if create and extracted:
            self.marketers.set(extracted)


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Campaign

    advertiser = factory.SubFactory(AdvertiserFactory)
    name = factory.Sequence(lambda n: f"Campaign {n}")
    start_at = factory.LazyFunction(lambda: timezone.now() - datetime.timedelta(days=1))
    end_at = factory.LazyAttribute(lambda campaign: campaign.start_at
                                   + datetime.timedelta(days=30))
    total_budget = Decimal("1000.0000")
    daily_budget = Decimal("100.0000")
    base_bid_cpm = Decimal("2.5000")
    max_bid_cpm = Decimal("5.0000")
    created_by = factory.SubFactory(UserFactory, role=MARKETER)


class CreativeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Creative

    campaign = factory.SubFactory(CampaignFactory)
    name = factory.Sequence(lambda n: f"Creative {n}")
    format = Creative.Format.BANNER
    sizes = factory.LazyFunction(lambda: ["300x250"])
    markup = "<a href='https://shop.example'>Shop</a>"
    adomain = "shop.example"
    created_by = factory.SelfAttribute("campaign.created_by")


def _png_upload(name: str = "ad.png") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 250), (200, 40, 40)).save(buffer, format="PNG")
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="image/png")


def _form_post_data(response) -> dict:
    """What a browser would post back for an admin change form: the main form, its inline
    formsets and their management forms, with every value as rendered."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms.append(inline.formset.management_form)
        forms.extend(inline.formset.forms)
    data: dict = {}
    for form in forms:
        for bound in form:
            value = bound.value()
            widget = bound.field.widget
            if isinstance(widget, MultiWidget):
                parts = value if isinstance(value, list) else widget.decompress(value)
                for suffix, part in zip(widget.widgets_names, parts, strict=True):
                    data[f"{bound.html_name}{suffix}"] = "" if part is None else str(part)
            elif isinstance(value, list):
                data[bound.html_name] = [str(item) for item in value]
            elif isinstance(value, bool):
                if value:
                    data[bound.html_name] = "on"
            elif value is not None and not isinstance(value, FieldFile):
                data[bound.html_name] = str(value)
    return data


@pytest.fixture
def ops(db):
    return UserFactory(username="ops-user", role=OPS)


@pytest.fixture
def approver(db):
    return UserFactory(username="approver-user", role=APPROVER)


@pytest.fixture
def marketer(db):
    return UserFactory(username="marketer-a", role=MARKETER)


@pytest.fixture
def other_marketer(db):
    return UserFactory(username="marketer-b", role=MARKETER)


@pytest.fixture
def advertiser(marketer):
    return AdvertiserFactory(name="Northwind", marketers=[marketer])


@pytest.fixture
def other_advertiser(other_marketer):
    return AdvertiserFactory(name="Contoso", marketers=[other_marketer])


@pytest.fixture
def campaign(advertiser, marketer):
    """A draft of advertiser A, written by marketer A, running now."""
    return CampaignFactory(advertiser=advertiser, created_by=marketer, name="Morning Rush")


@pytest.fixture
def other_campaign(other_advertiser, other_marketer):
    return CampaignFactory(advertiser=other_advertiser, created_by=other_marketer,
                           name="Weekend Getaways")


@pytest.fixture
def make_campaign(advertiser, marketer):
    """A campaign of advertiser A in any status, with an approved creative when it may run."""

    def make(status: str = Campaign.Status.DRAFT, *, approved_creative: bool = True,
             **fields) -> Campaign:
        campaign = CampaignFactory(advertiser=advertiser, created_by=marketer, status=status,
                                   **fields)
        if approved_creative:
            CreativeFactory(campaign=campaign, approval_status=Creative.Approval.APPROVED)
        return campaign

    return make


def _api_client(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


# Factories and helpers as fixtures, so test modules never import a conftest.

@pytest.fixture
def user_factory(db):
    return UserFactory


@pytest.fixture
def advertiser_factory(db):
    return AdvertiserFactory


@pytest.fixture
def campaign_factory(db):
    return CampaignFactory


@pytest.fixture
def creative_factory(db):
    return CreativeFactory


@pytest.fixture
def png_upload():
    return _png_upload


@pytest.fixture
def admin_form_data():
    return _form_post_data


@pytest.fixture
def api_client():
    return _api_client


@pytest.fixture
def marketer_api(marketer):
    return _api_client(marketer)


@pytest.fixture
def other_marketer_api(other_marketer):
    return _api_client(other_marketer)


@pytest.fixture
def approver_api(approver):
    return _api_client(approver)


@pytest.fixture
def ops_api(ops):
    return _api_client(ops)
