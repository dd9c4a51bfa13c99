"""Secrets never reach logs or the event log: redaction by key name.

Pydantic ``SecretStr`` fields already dump as ``**********``; this catches secrets in
plain dicts (step inputs, webhook headers) by the name of the key that holds them.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REDACTED", "is_secret_key", "redact"]

REDACTED = "[redacted]"

_SECRET_KEY = re.compile(
    r"pass(word|wd)?|secret|token|api[-_]?key|authori[sz]ation|credential|private[-_]?key"
    r"|signature|cookie|routing[-_]?key",
    re.IGNORECASE,
)


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret-named key's value replaced."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
