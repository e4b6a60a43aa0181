"""Writes for exchanges and currency rates (ops): validated, audited, pushed to bidders.

An exchange's bearer token is kept only as its sha256 (`token_hash`); the audit log says only
that it was set, replaced or unset, never the token or its hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from campaign_express.errors import fields_assign
from campaigns.models import AuditEntry, CurrencyRate, Exchange
from campaigns.services import _audit, _diff, _require, _values
from campaigns.snapshot import snapshot_request


def token_hash(token: str) -> str:
    """What is stored and sent to bidders instead of an exchange's bearer token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _set_token(exchange: Exchange, token: str | None, changes: dict[str, list[Any]]) -> None:
    """A new token replaces the old; None or "" keeps it. The audit says only that it changed."""
    if not token:
        return
    before = "set" if exchange.token_sha256 else "not set"
    exchange.token_sha256 = token_hash(token)
    changes["token"] = [before, "replaced" if before == "set" else "set"]


@transaction.atomic
def exchange_create(*, actor: AbstractBaseUser, data: Mapping[str, Any],
                    token: str | None = None) -> Exchange:
    _require(actor, "campaigns.add_exchange")
    exchange = Exchange()
    fields_assign(exchange, data)
    changes: dict[str, list[Any]] = {}
    _set_token(exchange, token, changes)
    exchange.full_clean()
    exchange.save()
    _audit(actor=actor, action=AuditEntry.Action.CREATE, instance=exchange,
           changes={**_diff({}, _values(exchange)), **changes})
    snapshot_request()
    return exchange


@transaction.atomic
def exchange_update(*, exchange: Exchange, actor: AbstractBaseUser, data: Mapping[str, Any],
                    token: str | None = None) -> Exchange:
    _require(actor, "campaigns.change_exchange")
    exchange = Exchange.objects.select_for_update().get(pk=exchange.pk)
    before = _values(exchange)
    fields_assign(exchange, data)
    changes: dict[str, list[Any]] = {}
    _set_token(exchange, token, changes)
    if exchange.auth != Exchange.Auth.TOKEN and exchange.token_sha256:
        exchange.token_sha256 = ""  # a credential nothing checks is not kept
        changes["token"] = ["set", "not set"]
    exchange.full_clean()
    exchange.save()
    changes = {**_diff(before, _values(exchange)), **changes}
    if changes:
        _audit(actor=actor, action=AuditEntry.Action.UPDATE, instance=exchange,
               changes=changes)
    snapshot_request()
    return exchange


@transaction.atomic
def exchange_delete(*, exchange: Exchange, actor: AbstractBaseUser) -> None:
    _require(actor, "campaigns.delete_exchange")
    _audit(actor=actor, action=AuditEntry.Action.DELETE, instance=exchange,
           changes=_diff(_values(exchange), {}))
    exchange.delete()
    snapshot_request()


@transaction.atomic
def currency_rate_set(*, actor: AbstractBaseUser, currency: str,
                      units_per_usd: Decimal) -> CurrencyRate:
    """Create or change the rate of one currency."""
    rate = CurrencyRate.objects.select_for_update().filter(currency=currency).first()
    is_new = rate is None
    _require(actor, "campaigns.add_currencyrate" if is_new else "campaigns.change_currencyrate")
    rate = rate or CurrencyRate(currency=currency)
    before = {} if is_new else _values(rate)
    rate.units_per_usd = units_per_usd
    rate.full_clean()
    rate.save()
    changes = _diff(before, _values(rate))
    if changes:
        _audit(actor=actor, action=AuditEntry.Action.CREATE if is_new
               else AuditEntry.Action.UPDATE, instance=rate, changes=changes)
    snapshot_request()
    return rate


@transaction.atomic
def currency_rate_delete(*, rate: CurrencyRate, actor: AbstractBaseUser) -> None:
    _require(actor, "campaigns.delete_currencyrate")
    _audit(actor=actor, action=AuditEntry.Action.DELETE, instance=rate,
           changes=_diff(_values(rate), {}))
    rate.delete()
    snapshot_request()
