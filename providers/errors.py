"""Errors raised by providers, rooted in Resolute's ``ResoluteError``.

The split the engine cares about: ``VendorRequestError`` is a ``NonRetryableError`` (the
vendor rejected the request and will reject it again), ``VendorUnavailableError`` is
retried by the step's retry policy. Messages carry the vendor's own explanation but
never a credential.
"""

from __future__ import annotations

from orchestrator.errors import NonRetryableError, ResoluteError

__all__ = [
    "CommandNotAllowedError",
    "NotFoundError",
    "PayloadError",
    "ProviderError",
    "TransformError",
    "VendorRequestError",
    "VendorUnavailableError",
]


class ProviderError(ResoluteError):
    """Root of every error a provider raises on purpose."""


class VendorRequestError(ProviderError, NonRetryableError):
    """The vendor answered 4xx (other than 408/429): the request itself is wrong."""

    def __init__(self, vendor: str, operation: str, status: int, message: str) -> None:
        super().__init__(f"{vendor} {operation} failed with HTTP {status}: {message}")
        self.vendor = vendor
        self.operation = operation
        self.status = status
        self.vendor_message = message


class VendorUnavailableError(ProviderError):
    """Timeout, connection error, 408/429 or 5xx after the in-place retries ran out."""

    def __init__(
        self, vendor: str, operation: str, problem: str, status: int | None = None
    ) -> None:
        super().__init__(f"{vendor} {operation} unavailable: {problem}")
        self.vendor = vendor
        self.operation = operation
        self.status = status


class NotFoundError(ProviderError, NonRetryableError):
    """Something a step names (a transition, a user, a space) does not exist at the vendor."""


class PayloadError(ProviderError, NonRetryableError, ValueError):
    """An incoming payload (e.g. a webhook body) does not have the expected shape."""


class TransformError(ProviderError, NonRetryableError):
    """A local transform failed on its data (missing path, a key function raised)."""


class CommandNotAllowedError(ProviderError, NonRetryableError):
    """A runbook command is not on the configured allowlist."""
