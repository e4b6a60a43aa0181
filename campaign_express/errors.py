"""The one domain error type; the API maps it to a 4xx and the admin shows its message."""

from __future__ import annotations


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
