"""Authentication of machine callers (point-of-sale systems, apps) by API key.

`Authorization: Bearer lk_...`. A request without a key, or with an unknown or revoked one,
is 401 before any view code runs; a key used for an action it was not given is 403. Either
way nothing changes.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.permissions import BasePermission

from loyalty.models import ApiKey
from loyalty.services import keys


class ApiKeyAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts:
            return None
        if parts[0].lower() != self.keyword or len(parts) != 2:
            raise AuthenticationFailed("Send the API key as: Authorization: Bearer <key>.")
        api_key = keys.api_key_authenticate(secret=parts[1].decode("latin-1"))
        if api_key is None:
            raise AuthenticationFailed("Unknown or revoked API key.")
        return AnonymousUser(), api_key

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="loyalty"'


class KeyAllowsAction(BasePermission):
    """The view's `key_action` must be one of the key's actions."""

    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False  # DRF answers 401: no key was given
        if view.key_action not in api_key.actions:
            raise PermissionDenied(f"This API key may not call {view.key_action}; it may call "
                                   f"{', '.join(api_key.actions)}.")
        return True


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """The key in the OpenAPI schema, so the docs offer it for `/v1/loyalty/*`."""

    target_class = "loyalty.auth.ApiKeyAuthentication"
    name = "loyaltyApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A loyalty API key (lk_...), scoped to a program and actions."}
