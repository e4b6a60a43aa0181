"""Reads, always scoped to what the user may see."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from campaigns.models import Advertiser, AuditEntry, Campaign, Creative


def user_sees_all_advertisers(*, user: AbstractBaseUser) -> bool:
    return user.is_active and user.has_perm("campaigns.access_all_advertisers")


def advertiser_list(*, user: AbstractBaseUser) -> QuerySet[Advertiser]:
    advertisers = Advertiser.objects.all()
    if user_sees_all_advertisers(user=user):
        return advertisers
    if not user.is_authenticated or not user.is_active:
        return advertisers.none()
    return advertisers.filter(marketers=user)


def campaign_list(*, user: AbstractBaseUser) -> QuerySet[Campaign]:
    campaigns = Campaign.objects.select_related("advertiser", "created_by", "approved_by")
    if user_sees_all_advertisers(user=user):
        return campaigns
    return campaigns.filter(advertiser__in=advertiser_list(user=user))


def creative_list(*, user: AbstractBaseUser) -> QuerySet[Creative]:
    creatives = Creative.objects.select_related("campaign", "campaign__advertiser")
    if user_sees_all_advertisers(user=user):
        return creatives
    return creatives.filter(campaign__advertiser__in=advertiser_list(user=user))


def audit_list(*, user: AbstractBaseUser, campaign_id: int | None = None) -> QuerySet[AuditEntry]:
    entries = AuditEntry.objects.select_related("actor")
    if campaign_id is not None:
        entries = entries.filter(Q(campaign_id=campaign_id)
                                 | Q(entity="campaign", entity_id=campaign_id))
    if user_sees_all_advertisers(user=user):
        return entries
    visible = advertiser_list(user=user).values_list("id", flat=True)
    return entries.filter(advertiser_id__in=list(visible))
