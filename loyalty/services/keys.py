"""API keys for machine callers of `/v1/loyalty/*`: created, revoked, checked.

A key is a random secret shown once, at creation; the database keeps its sha256 and its first
characters (to recognise it in a list). A key belongs to one program and names the actions it
may call, so a till's key can earn but not read balances, and a leaked key reaches one
program only.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Sequence

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from loyalty.models import ApiKey, Program
from loyalty.services.programs import _require

KEY_PREFIX = "lk_"
SHOWN_CHARACTERS = 10
# last_used_at is written at most this often per key, not on every call.
LAST_USED_RESOLUTION = datetime.timedelta(minutes=1)


def key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def api_key_create(*, actor: AbstractBaseUser | None, program: Program, name: str,
                   actions: Sequence[str]) -> tuple[ApiKey, str]:
    """The new key and its secret; the secret is not stored and cannot be shown again."""
    _require(actor, "loyalty.add_apikey", program.advertiser)
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey(program=program, name=name, actions=list(actions),
                     prefix=secret[:SHOWN_CHARACTERS], key_sha256=key_hash(secret),
                     created_by=actor)
    api_key.full_clean()
    api_key.save()
    return api_key, secret


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor: AbstractBaseUser | None) -> ApiKey:
    _require(actor, "loyalty.change_apikey", api_key.program.advertiser)
    api_key = ApiKey.objects.select_for_update().get(pk=api_key.pk)
    if api_key.is_active:
        api_key.is_active = False
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["is_active", "revoked_at"])
    return api_key


def api_key_authenticate(*, secret: str, now: datetime.datetime | None = None) -> ApiKey | None:
    """The active key with this secret (its program loaded), or None."""
    if not secret.startswith(KEY_PREFIX):
        return None
    api_key = (ApiKey.objects.select_related("program")
               .filter(key_sha256=key_hash(secret), is_active=True).first())
    if api_key is None:
        return None
    now = now or timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
    return api_key

