"""Webhook verification: who may start a run by posting to a route.

Every webhook trigger names its verifier; a route without one is refused at start
(``no_verification()`` says "anyone may post here" out loud).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from pydantic import SecretStr

from .errors import ConfigurationError

__all__ = [
    "PAGERDUTY_SIGNATURE_HEADER",
    "HmacSignature",
    "NoVerification",
    "Verifier",
    "no_verification",
    "pagerduty_v3",
]

PAGERDUTY_SIGNATURE_HEADER = "X-PagerDuty-Signature"


@runtime_checkable
class Verifier(Protocol):
    """Decides from the raw body and the headers whether a delivery is genuine."""

    @property
    def name(self) -> str: ...

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool: ...


class HmacSignature:
    """``header: <prefix><hex digest>[,<prefix><hex digest>...]`` over the raw body.

    Several signatures in the header (the sender rotating its secret) and several
    secrets here (the receiver rotating) are both accepted: any pair that matches wins.
    """

    def __init__(
        self,
        *,
        header: str,
        secrets: Iterable[str | SecretStr] | str | SecretStr,
        prefix: str = "v1=",
        algorithm: str = "sha256",
    ) -> None:
        if algorithm not in hashlib.algorithms_guaranteed:
            raise ConfigurationError(
                f"unknown HMAC algorithm {algorithm!r}; use one of "
                f"{', '.join(sorted(hashlib.algorithms_guaranteed))}"
            )
        if isinstance(secrets, str | SecretStr):  # one secret, not a sequence of letters
            secrets = [secrets]
        keys = [s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets]
        self._keys = tuple(k.encode() for k in keys if k)
        if not self._keys:
            raise ConfigurationError(
                f"HMAC verification of {header} needs at least one non-empty secret"
            )
        self.header = header
        self.prefix = prefix
        self.algorithm = algorithm

    @property
    def name(self) -> str:
        return f"hmac-{self.algorithm}:{self.header}"

    def signature(self, body: bytes, secret: str) -> str:
        """The header value a sender holding ``secret`` would send (for tests and clients)."""
        return self.prefix + hmac.new(secret.encode(), body, self.algorithm).hexdigest()

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        wanted = self.header.lower()
        offered = [
            part.strip()[len(self.prefix) :].lower().encode("utf-8", "replace")
            for key, value in headers.items()
            if key.lower() == wanted
            for part in value.split(",")
            if part.strip().startswith(self.prefix)
        ]
        expected = [hmac.new(k, body, self.algorithm).hexdigest().encode() for k in self._keys]
        # Every pair is compared, without an early exit: the timing tells nothing.
        matches = [hmac.compare_digest(o, e) for o in offered for e in expected]
        return any(matches)

    def __repr__(self) -> str:
        return f"HmacSignature(header={self.header!r}, secrets={len(self._keys)})"


class NoVerification:
    """Accepts every delivery; only for routes that are safe to open to anyone."""

    name = "none"

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        return True

    def __repr__(self) -> str:
        return "no_verification()"


def pagerduty_v3(secrets: Iterable[str | SecretStr] | str | SecretStr) -> HmacSignature:
    """PagerDuty webhooks v3: ``X-PagerDuty-Signature: v1=<hex HMAC-SHA256>,...``."""
    return HmacSignature(header=PAGERDUTY_SIGNATURE_HEADER, secrets=secrets)


def no_verification() -> NoVerification:
    return NoVerification()
