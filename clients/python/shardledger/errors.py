"""Errors of the shardledger client.

Every failure the server answers with is a :class:`ShardledgerError` carrying the server's stable
``code`` (``VALIDATION``, ``NOT_FOUND``, ``SHARD_COVERAGE``, …), its ``message``, the ``field`` it
names (when it names one), the other ``details`` of the error body and the HTTP ``status``. The
subclass follows the HTTP status, so callers can catch by kind and still read the exact code::

    try:
        client.publish(run_id)
    except ConflictError as e:
        if e.code == "SHARD_COVERAGE":
            print("missing shards", e.details["missingShards"])
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

__all__ = [
    "ShardledgerError",
    "ValidationError",
    "AuthError",
    "NotFoundError",
    "ConflictError",
    "LockedError",
    "ServerError",
    "TransportError",
    "error_from_body",
    "CODE_STATUS",
]


class ShardledgerError(Exception):
    """Base class of every error the client raises on purpose.

    ``code`` is the server's error code (see ``ERROR_CODES`` in the TypeScript library);
    ``details`` holds every other key of the error body (for example ``missingShards``);
    ``status`` is the HTTP status, or ``None`` when no response arrived.
    """

    def __init__(
        self,
        code: str,
        message: str,
        field: Optional[str] = None,
        details: Optional[Mapping[str, Any]] = None,
        status: Optional[int] = None,
        request_id: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.details: Dict[str, Any] = dict(details or {})
        self.status = status
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" [{self.status}]" if self.status is not None else ""
        return f"{self.code}{where}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"field={self.field!r}, status={self.status!r})"
        )


class ValidationError(ShardledgerError):
    """400: the input was wrong (``VALIDATION`` or ``USAGE``); ``field`` names it. Repeating the
    same call can never succeed."""


class AuthError(ShardledgerError):
    """401 (``UNAUTHENTICATED``: no or unknown token) or 403 (``FORBIDDEN``: scope too small or
    dataset not allowed). Nothing happened."""


class NotFoundError(ShardledgerError):
    """404: the call names a dataset, run or stream that does not exist."""


class ConflictError(ShardledgerError):
    """409: a rule refused the call (``SHARD_COVERAGE``, ``SAFETY_RAIL``, ``ILLEGAL_TRANSITION``,
    ``CONTRADICTING_REPORT``, ``CONCURRENCY``, ``LEASE_LOST``); ``details`` says what."""


class LockedError(ShardledgerError):
    """423: another pass holds the lock (maintenance already running); try again later."""


class ServerError(ShardledgerError):
    """5xx: ``INTERNAL`` (a bug), ``OBJECT_STORE`` (502), ``INTERRUPTED`` (503, the server is
    stopping), or a proxy's 502/503/504 without a shardledger body."""


class TransportError(ShardledgerError):
    """No HTTP response at all (connection refused or reset, timeout) after the retries the call
    allows; ``code`` is ``"TRANSPORT"`` and ``status`` is ``None``. For a call that is not
    idempotent the outcome is unknown: look before repeating it (for example ``run(run_id)``)."""


# The HTTP status of each code (``ERROR_CODES`` in src/errors.ts plus the HTTP-only codes): used
# for errors that arrive without a status of their own, such as the items of a batch.
CODE_STATUS: Dict[str, int] = {
    "VALIDATION": 400,
    "USAGE": 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONCURRENCY": 409,
    "SHARD_COVERAGE": 409,
    "SAFETY_RAIL": 409,
    "ILLEGAL_TRANSITION": 409,
    "CONTRADICTING_REPORT": 409,
    "LEASE_LOST": 409,
    "LOCKED": 423,
    "OBJECT_STORE": 502,
    "INTERRUPTED": 503,
    "INTERNAL": 500,
}


def _class_for(status: int, code: str) -> "type[ShardledgerError]":
    if not status:
        status = CODE_STATUS.get(code, 0)
    if status == 400 or code in ("VALIDATION", "USAGE"):
        return ValidationError
    if status in (401, 403) or code in ("UNAUTHENTICATED", "FORBIDDEN"):
        return AuthError
    if status == 404 or code == "NOT_FOUND":
        return NotFoundError
    if status == 423 or code == "LOCKED":
        return LockedError
    if status == 409:
        return ConflictError
    if status >= 500:
        return ServerError
    return ShardledgerError


def error_from_body(
    body: Any,
    status: Optional[int] = None,
    request_id: Optional[str] = None,
    fallback_message: str = "",
) -> ShardledgerError:
    """Builds the typed error from an error body ``{"error": {"code", "message", "field"?, …}}``
    (or from the inner object itself, as batch items carry it). A body that is not shardledger's
    (a proxy's HTML page) still gives an error of the class the status implies, with code
    ``HTTP_<status>``."""
    inner = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else body
    if isinstance(inner, dict) and isinstance(inner.get("code"), str):
        code = inner["code"]
        message = str(inner.get("message", ""))
        field = inner.get("field") if isinstance(inner.get("field"), str) else None
        details = {k: v for k, v in inner.items() if k not in ("code", "message")}
    else:
        code = f"HTTP_{status}" if status is not None else "UNKNOWN"
        message = fallback_message or f"HTTP {status}"
        field = None
        details = {}
    cls = _class_for(status if status is not None else 0, code)
    return cls(code, message, field=field, details=details, status=status, request_id=request_id)
