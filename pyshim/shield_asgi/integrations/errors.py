"""Client-attestation errors (docs/protocol.md §3): ``AttestationError`` and its status.

The reason -> class -> status table is the native one (``shield_asgi._native.REASONS``, from
attest/), the same table the shield server's gate answers from; nothing here repeats it.
"""

from __future__ import annotations

from shield_asgi.attestation import ERROR_CLASSES, REASONS

__all__ = ["AttestationError", "ERROR_CLASSES", "STATUS"]

#: error class -> HTTP status (docs/protocol.md §3)
STATUS: dict[str, int] = {cls: status for cls, status in REASONS.values()}


class AttestationError(Exception):
    """One §3 error: ``reason`` decides the class and the status.  Not an HTTPException on
    purpose: FastAPI would answer {"detail": …}; AttestationMiddleware (or the handler that
    attestation_required registers) answers with the exact §3 body instead."""

    def __init__(self, reason: str, message: str = "") -> None:
        self.reason = reason
        self.error = ERROR_CLASSES.get(reason, "attestation_invalid")
        self.message = message or reason
        self.status_code = STATUS[self.error]
        self.headers = {"Retry-After": "1"} if reason == "overloaded" else None
        super().__init__(f"{self.error}: {self.reason}: {self.message}")

    def body(self) -> dict:
        return {"error": self.error, "reason": self.reason, "message": self.message}
