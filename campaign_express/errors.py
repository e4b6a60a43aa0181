"""The one domain error type; the API maps it to a 4xx and the admin shows its message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """A rule refused an action. ``field`` names what to fix; ``status`` is the HTTP status.

    400: the input breaks a rule; 403: the actor may not do this; 404: not found or not visible;
    409: the object's state does not allow it (a refused workflow transition).
    """

    def __init__(self, message: str, *, field: str | None = None, status: int = 400,
                 code: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status
        self.code = code

    def as_dict(self) -> dict[str, str | list[str]]:
        """A field's messages as a list, as DRF gives them; otherwise DRF's ``detail``."""
        if self.field:
            return {self.field: [self.message]}
        return {"detail": self.message}


def fields_assign(instance: Any, data: Mapping[str, Any]) -> None:
    """Set `data` on a model instance, refusing fields that are unknown or not editable, so an
    API or service caller cannot write what a form could not."""
    editable = {field.name for field in instance._meta.concrete_fields if field.editable}
    unknown = sorted(set(data) - editable)
    if unknown:
        raise DomainError(f"Unknown or read-only field: {', '.join(unknown)}.", field=unknown[0])
    for name, value in data.items():
        setattr(instance, name, value)
