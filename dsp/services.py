"""Writes for DSP partners (ops): validated, audited, pushed to bidders with the snapshot.

The audit log records which fields changed; the credential is only ever a variable name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from campaign_express.errors import DomainError
from campaigns.models import AuditEntry
from campaigns.snapshot import snapshot_request
from dsp.models import DspPartner

EDITABLE = ("name", "seat", "endpoint_url", "openrtb_version", "timeout_ms", "qps_limit",
            "margin", "formats", "countries", "device_types", "daily_spend_cap", "currency",
            "credential_ref", "is_enabled")


def _require(actor: AbstractBaseUser, permission: str) -> None:
    if not actor.has_perm(permission):
        raise DomainError(f"You do not have the {permission!r} permission.", status=403,
                          code="permission_denied")


def _assign(partner: DspPartner, data: Mapping[str, Any]) -> list[str]:
    unknown = sorted(set(data) - set(EDITABLE))
    if unknown:
        raise DomainError(f"Unknown or read-only field: {', '.join(unknown)}.", field=unknown[0])
    changed = [name for name, value in data.items() if getattr(partner, name) != value]
    for name, value in data.items():
        setattr(partner, name, value)
    return changed


def _audit(actor: AbstractBaseUser | None, action: str, partner: DspPartner,
           changed: list[str]) -> None:
    AuditEntry.objects.create(actor=actor, action=action, entity="dsppartner",
                              entity_id=partner.pk, entity_name=partner.name,
                              changes={name: [None, str(getattr(partner, name))]
                                       for name in changed})


@transaction.atomic
def dsp_partner_create(*, actor: AbstractBaseUser, data: Mapping[str, Any]) -> DspPartner:
    _require(actor, "dsp.add_dsppartner")
    partner = DspPartner()
    changed = _assign(partner, data)
    partner.full_clean()
    partner.save()
    _audit(actor, AuditEntry.Action.CREATE, partner, changed)
    snapshot_request()
    return partner


@transaction.atomic
def dsp_partner_update(*, partner: DspPartner, actor: AbstractBaseUser,
                       data: Mapping[str, Any]) -> DspPartner:
    _require(actor, "dsp.change_dsppartner")
    partner = DspPartner.objects.select_for_update().get(pk=partner.pk)
    changed = _assign(partner, data)
    partner.full_clean()
    partner.save()
    if changed:
        _audit(actor, AuditEntry.Action.UPDATE, partner, changed)
    snapshot_request()
    return partner


@transaction.atomic
def dsp_partner_delete(*, partner: DspPartner, actor: AbstractBaseUser) -> None:
    _require(actor, "dsp.delete_dsppartner")
    _audit(actor, AuditEntry.Action.DELETE, partner, [])
    partner.delete()
    snapshot_request()
