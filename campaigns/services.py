"""Writes for advertisers, campaigns, creatives, exchanges and currency rates: validation,
workflow and audit.

Every write runs in one transaction that also writes its audit entry, so the history can never
miss a change. A write that changes what bidding sees also requests a config snapshot publish
(`campaigns.snapshot.snapshot_request`) in that transaction. Workflow transitions lock the
campaign row (``select_for_update``) so two concurrent actions cannot both pass their status
check.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.db.models.fields.files import FieldFile
from django.utils import timezone

from campaign_express.errors import DomainError, fields_assign
from campaigns.models import Advertiser, AuditEntry, Campaign, Creative
from campaigns.selectors import user_sees_all_advertisers
from campaigns.snapshot import snapshot_request

Status = Campaign.Status
EDITABLE_STATUSES = (Status.DRAFT, Status.IN_REVIEW, Status.APPROVED, Status.REJECTED,
                     Status.ACTIVE, Status.PAUSED)
REVIEWED_STATUSES = (Status.APPROVED, Status.ACTIVE, Status.PAUSED)
DELETABLE_STATUSES = (Status.DRAFT, Status.REJECTED)


@dataclass(frozen=True)
class Transition:
    sources: tuple[str, ...]
    target: str
    permission: str


TRANSITIONS: dict[str, Transition] = {
    "submit": Transition((Status.DRAFT,), Status.IN_REVIEW, "campaigns.change_campaign"),
    "approve": Transition((Status.IN_REVIEW,), Status.APPROVED, "campaigns.approve_campaign"),
    "reject": Transition((Status.IN_REVIEW,), Status.REJECTED, "campaigns.approve_campaign"),
    "reopen": Transition((Status.REJECTED,), Status.DRAFT, "campaigns.change_campaign"),
    "activate": Transition((Status.APPROVED,), Status.ACTIVE, "campaigns.change_campaign"),
    "pause": Transition((Status.ACTIVE,), Status.PAUSED, "campaigns.change_campaign"),
    "resume": Transition((Status.PAUSED,), Status.ACTIVE, "campaigns.change_campaign"),
    # From approved too: a campaign whose end passes before it ever ran must not stay stuck.
    "complete": Transition((Status.APPROVED, Status.ACTIVE, Status.PAUSED), Status.COMPLETED,
                           "campaigns.change_campaign"),
    "archive": Transition((Status.DRAFT, Status.REJECTED, Status.COMPLETED), Status.ARCHIVED,
                          "campaigns.change_campaign"),
}


# --- helpers ---------------------------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A JSON-safe form of a field value for the audit log."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, FieldFile):
        return value.name or ""
    if isinstance(value, models.Model):
        return value.pk
    return value


def _values(instance: models.Model) -> dict[str, Any]:
    return {field.attname: getattr(instance, field.attname)
            for field in instance._meta.concrete_fields
            if field.editable and not field.primary_key}


def _diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Changed fields as JSON-safe ``[before, after]``, either side missing for a create or
    delete. Values compare as Python values: ``100`` and ``100.0000``, or one instant in two
    time zones, are no change (a false change would send a campaign back to review)."""
    names = dict.fromkeys([*before, *after])
    return {name: [_plain(before.get(name)), _plain(after.get(name))] for name in names
            if before.get(name) != after.get(name)}


def _audit(*, actor: AbstractBaseUser | None, action: str, instance: models.Model,
           changes: Mapping[str, Any] | None = None, from_status: str = "",
           to_status: str = "", note: str = "") -> AuditEntry:
    if isinstance(instance, Advertiser):
        advertiser_id, campaign_id = instance.pk, None
    elif isinstance(instance, Campaign):
        advertiser_id, campaign_id = instance.advertiser_id, instance.pk
    elif isinstance(instance, Creative):
        advertiser_id, campaign_id = instance.campaign.advertiser_id, instance.campaign_id
    else:  # exchanges and currency rates belong to no advertiser
        advertiser_id, campaign_id = None, None
    return AuditEntry.objects.create(
        actor=actor, action=action, entity=instance._meta.model_name, entity_id=instance.pk,
        entity_name=str(instance)[:200], advertiser_id=advertiser_id, campaign_id=campaign_id,
        changes=dict(changes or {}), from_status=from_status, to_status=to_status, note=note)


def _require(actor: AbstractBaseUser, permission: str) -> None:
    if not actor.has_perm(permission):
        raise DomainError(f"You do not have the {permission!r} permission.", status=403,
                          code="permission_denied")


def _require_advertiser(actor: AbstractBaseUser, advertiser: Advertiser) -> None:
    if user_sees_all_advertisers(user=actor):
        return
    if not advertiser.marketers.filter(pk=actor.pk).exists():
        raise DomainError("You are not assigned to this advertiser.", field="advertiser",
                          status=403, code="permission_denied")


def _is_approver(actor: AbstractBaseUser) -> bool:
    return actor.has_perm("campaigns.approve_campaign")


# --- advertisers -----------------------------------------------------------------------------

@transaction.atomic
def advertiser_create(*, actor: AbstractBaseUser, data: Mapping[str, Any],
                      marketers: list[AbstractBaseUser] | None = None) -> Advertiser:
    _require(actor, "campaigns.add_advertiser")
    advertiser = Advertiser()
    fields_assign(advertiser, data)
    advertiser.full_clean()
    advertiser.save()
    if marketers is not None:
        advertiser.marketers.set(marketers)
    _audit(actor=actor, action=AuditEntry.Action.CREATE, instance=advertiser,
           changes=_diff({}, _values(advertiser)))
    return advertiser


@transaction.atomic
def advertiser_update(*, advertiser: Advertiser, actor: AbstractBaseUser,
                      data: Mapping[str, Any],
                      marketers: list[AbstractBaseUser] | None = None) -> Advertiser:
    _require(actor, "campaigns.change_advertiser")
    before = _values(advertiser)
    fields_assign(advertiser, data)
    advertiser.full_clean()
    advertiser.save()
    changes = _diff(before, _values(advertiser))
    if marketers is not None:
        old = sorted(advertiser.marketers.values_list("username", flat=True))
        advertiser.marketers.set(marketers)
        new = sorted(user.get_username() for user in marketers)
        if old != new:
            changes["marketers"] = [old, new]
    if changes:
        _audit(actor=actor, action=AuditEntry.Action.UPDATE, instance=advertiser,
               changes=changes)
    if "time_zone" in changes or "is_active" in changes:
        # Campaigns carry their advertiser's time zone, and an inactive advertiser's do not bid.
        snapshot_request()
    return advertiser


# --- campaigns -------------------------------------------------------------------------------

@transaction.atomic
def campaign_create(*, actor: AbstractBaseUser, data: Mapping[str, Any]) -> Campaign:
    _require(actor, "campaigns.add_campaign")
    campaign = Campaign(created_by=actor)
    fields_assign(campaign, data)
    if campaign.advertiser_id is None:
        raise DomainError("Choose an advertiser.", field="advertiser")
    _require_advertiser(actor, campaign.advertiser)
    if "currency" not in data:
        campaign.currency = campaign.advertiser.currency
    campaign.full_clean()
    campaign.save()
    _audit(actor=actor, action=AuditEntry.Action.CREATE, instance=campaign,
           changes=_diff({}, _values(campaign)), to_status=campaign.status)
    snapshot_request()
    return campaign


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update().select_related("advertiser").get(pk=campaign.pk)


def _send_back_to_review(campaign: Campaign, actor: AbstractBaseUser, reason: str) -> None:
    """An approved or running campaign changed by a non-approver needs a new review."""
    if campaign.status not in REVIEWED_STATUSES or _is_approver(actor):
        return
    previous = campaign.status
    campaign.status = Status.IN_REVIEW
    campaign.submitted_by = actor
    campaign.approved_by = None
    campaign.approved_at = None
    campaign.save(update_fields=["status", "submitted_by", "approved_by", "approved_at",
                                 "updated_at"])
    _audit(actor=actor, action=AuditEntry.Action.TRANSITION, instance=campaign,
           from_status=previous, to_status=campaign.status, note=f"Back to review: {reason}")


@transaction.atomic
def campaign_update(*, campaign: Campaign, actor: AbstractBaseUser,
                    data: Mapping[str, Any]) -> Campaign:
    _require(actor, "campaigns.change_campaign")
    campaign = _locked(campaign)
    _require_advertiser(actor, campaign.advertiser)
    if campaign.status not in EDITABLE_STATUSES:
        raise DomainError(f"A {campaign.get_status_display().lower()} campaign cannot be "
                          "changed.", field="status", status=409, code="not_editable")
    before = _values(campaign)
    fields_assign(campaign, data)
    if campaign.advertiser_id != before["advertiser_id"]:
        _require_advertiser(actor, campaign.advertiser)
    campaign.full_clean()
    campaign.save()
    changes = _diff(before, _values(campaign))
    if changes:
        _audit(actor=actor, action=AuditEntry.Action.UPDATE, instance=campaign, changes=changes)
    reviewed = sorted(set(changes) & set(Campaign.REVIEWED_FIELDS))
    if reviewed:
        _send_back_to_review(campaign, actor, f"changed {', '.join(reviewed)}")
    snapshot_request()
    return campaign


@transaction.atomic
def campaign_delete(*, campaign: Campaign, actor: AbstractBaseUser) -> None:
    _require(actor, "campaigns.delete_campaign")
    campaign = _locked(campaign)
    _require_advertiser(actor, campaign.advertiser)
    if campaign.status not in DELETABLE_STATUSES:
        raise DomainError(f"Only draft or rejected campaigns can be deleted; this one is "
                          f"{campaign.get_status_display().lower()}. Archive it instead.",
                          field="status", status=409, code="not_deletable")
    _audit(actor=actor, action=AuditEntry.Action.DELETE, instance=campaign,
           changes=_diff(_values(campaign), {}), from_status=campaign.status)
    campaign.delete()
    snapshot_request()


def _check_can_run(campaign: Campaign, now: datetime.datetime) -> None:
    if now < campaign.start_at:
        raise DomainError(f"The campaign starts at {campaign.start_at:%Y-%m-%d %H:%M %Z}; it "
                          "goes active by itself then.", field="start_at", status=409,
                          code="outside_schedule")
    if now >= campaign.end_at:
        raise DomainError(f"The campaign ended at {campaign.end_at:%Y-%m-%d %H:%M %Z}.",
                          field="end_at", status=409, code="outside_schedule")
    if not campaign.creatives.filter(approval_status=Creative.Approval.APPROVED).exists():
        raise DomainError("The campaign needs at least one approved creative.",
                          field="creatives", status=409, code="no_approved_creative")


@transaction.atomic
def campaign_transition(*, campaign: Campaign, actor: AbstractBaseUser | None, action: str,
                        note: str = "", now: datetime.datetime | None = None) -> Campaign:
    """Move a campaign along its workflow. ``actor`` None is the scheduler."""
    transition = TRANSITIONS.get(action)
    if transition is None:
        raise DomainError(f"Unknown action {action!r}; one of {', '.join(TRANSITIONS)}.",
                          field="action", status=404, code="unknown_action")
    now = now or timezone.now()
    campaign = _locked(campaign)
    if actor is not None:
        _require(actor, transition.permission)
        _require_advertiser(actor, campaign.advertiser)
    if campaign.status not in transition.sources:
        raise DomainError(f"Cannot {action} a campaign that is "
                          f"{campaign.get_status_display().lower()}; allowed from "
                          f"{', '.join(transition.sources)}.",
                          field="status", status=409, code="invalid_transition")
    if action == "approve" and actor is not None and actor.pk in (campaign.created_by_id,
                                                                   campaign.submitted_by_id):
        raise DomainError("The approver cannot be the campaign's author or submitter.",
                          field="approved_by", status=403, code="approver_is_author")
    if action == "reject" and not note.strip():
        raise DomainError("Say why the campaign is rejected.", field="note")
    if transition.target == Status.ACTIVE:
        _check_can_run(campaign, now)

    previous = campaign.status
    campaign.status = transition.target
    if action == "submit":
        campaign.submitted_by = actor
    if action == "approve":
        campaign.approved_by, campaign.approved_at = actor, now
    if action in ("approve", "reject"):
        campaign.review_note = note
    campaign.save()
    _audit(actor=actor, action=AuditEntry.Action.TRANSITION, instance=campaign,
           from_status=previous, to_status=campaign.status, note=note or action)
    snapshot_request()
    return campaign


def campaigns_advance(*, now: datetime.datetime | None = None) -> dict[str, int]:
    """Start approved campaigns whose time has come; complete ended or spent ones (approved
    ones whose end passed before they ran included).

    Run periodically; idempotent. A campaign that cannot start (no approved creative) stays
    approved and is retried on the next run.
    """
    now = now or timezone.now()
    counts = {"activated": 0, "completed": 0}
    due = Campaign.objects.filter(status=Status.APPROVED, start_at__lte=now, end_at__gt=now)
    for campaign in due:
        try:
            campaign_transition(campaign=campaign, actor=None, action="activate",
                                note="Scheduled start", now=now)
            counts["activated"] += 1
        except DomainError:
            continue
    ended = Campaign.objects.filter(
        status__in=[Status.APPROVED, Status.ACTIVE, Status.PAUSED], end_at__lte=now)
    spent = Campaign.objects.filter(status__in=[Status.ACTIVE, Status.PAUSED],
                                    spent__gte=models.F("total_budget"))
    for campaign in (ended | spent).distinct():
        reason = "Schedule ended" if campaign.end_at <= now else "Total budget spent"
        campaign_transition(campaign=campaign, actor=None, action="complete", note=reason,
                            now=now)
        counts["completed"] += 1
    return counts


# --- creatives -------------------------------------------------------------------------------

def _check_creative_editable(campaign: Campaign) -> None:
    if campaign.status not in EDITABLE_STATUSES:
        raise DomainError(f"Creatives of a {campaign.get_status_display().lower()} campaign "
                          "cannot be changed.", field="campaign", status=409,
                          code="not_editable")


@transaction.atomic
def creative_create(*, actor: AbstractBaseUser, data: Mapping[str, Any]) -> Creative:
    _require(actor, "campaigns.add_creative")
    creative = Creative(created_by=actor)
    fields_assign(creative, data)
    if creative.campaign_id is None:
        raise DomainError("Choose a campaign.", field="campaign")
    campaign = _locked(creative.campaign)
    _require_advertiser(actor, campaign.advertiser)
    _check_creative_editable(campaign)
    creative.full_clean()
    creative.save()
    _audit(actor=actor, action=AuditEntry.Action.CREATE, instance=creative,
           changes=_diff({}, _values(creative)))
    _send_back_to_review(campaign, actor, f"added creative {creative.name!r}")
    snapshot_request()
    return creative


@transaction.atomic
def creative_update(*, creative: Creative, actor: AbstractBaseUser,
                    data: Mapping[str, Any]) -> Creative:
    _require(actor, "campaigns.change_creative")
    if "campaign" in data and data["campaign"] != creative.campaign:
        raise DomainError("A creative cannot move to another campaign.", field="campaign")
    campaign = _locked(creative.campaign)
    _require_advertiser(actor, campaign.advertiser)
    _check_creative_editable(campaign)
    before = _values(creative)
    fields_assign(creative, data)
    creative.full_clean()
    changes = _diff(before, _values(creative))
    if changes and not _is_approver(actor):
        creative.approval_status = Creative.Approval.PENDING
        creative.reviewed_by = creative.reviewed_at = None
    creative.save()
    if changes:
        _audit(actor=actor, action=AuditEntry.Action.UPDATE, instance=creative, changes=changes)
        _send_back_to_review(campaign, actor, f"changed creative {creative.name!r}")
    snapshot_request()
    return creative


@transaction.atomic
def creative_delete(*, creative: Creative, actor: AbstractBaseUser) -> None:
    _require(actor, "campaigns.delete_creative")
    campaign = _locked(creative.campaign)
    _require_advertiser(actor, campaign.advertiser)
    _check_creative_editable(campaign)
    if campaign.status == Status.ACTIVE and not campaign.creatives.exclude(
            pk=creative.pk).filter(approval_status=Creative.Approval.APPROVED).exists():
        raise DomainError("An active campaign must keep at least one approved creative; pause "
                          "it first.", field="campaign", status=409,
                          code="last_approved_creative")
    _audit(actor=actor, action=AuditEntry.Action.DELETE, instance=creative,
           changes=_diff(_values(creative), {}))
    creative.delete()
    _send_back_to_review(campaign, actor, f"removed creative {creative.name!r}")
    snapshot_request()


@transaction.atomic
def creative_review(*, creative: Creative, actor: AbstractBaseUser, approve: bool,
                    note: str = "") -> Creative:
    _require(actor, "campaigns.approve_creative")
    creative = Creative.objects.select_for_update().get(pk=creative.pk)
    _require_advertiser(actor, creative.campaign.advertiser)
    if actor.pk == creative.created_by_id:
        raise DomainError("The reviewer cannot be the creative's author.", field="reviewed_by",
                          status=403, code="approver_is_author")
    if not approve and not note.strip():
        raise DomainError("Say why the creative is rejected.", field="note")
    previous = creative.approval_status
    creative.approval_status = (Creative.Approval.APPROVED if approve
                                else Creative.Approval.REJECTED)
    creative.reviewed_by, creative.reviewed_at, creative.review_note = actor, timezone.now(), note
    creative.save()
    _audit(actor=actor, action=AuditEntry.Action.TRANSITION, instance=creative,
           from_status=previous, to_status=creative.approval_status,
           note=note or ("approve" if approve else "reject"))
    snapshot_request()
    return creative
