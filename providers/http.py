"""The HTTP layer every REST provider shares: one aiohttp session per provider, timeouts,
in-place retries with exponential backoff and jitter, vendor error messages, redaction.

Retry rules:
- 408, 429, 5xx, timeouts and connection errors are retried in place, waiting at least
  what ``Retry-After`` / ``ratelimit-reset`` asks for. A wait longer than
  ``max_retry_after`` is not slept here: the step fails retryably and the engine's
  durable retry takes over.
- Other 4xx raise ``VendorRequestError`` (non-retryable) with the vendor's message.
- A request that is not replay-safe (a create without a natural idempotency key) is
  retried in place only when the vendor certainly did not act on it (429, or the
  connection was never made); otherwise the step fails retryably so that its next
  attempt can probe for the object before creating it again.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.errors import ConfigurationError
from orchestrator.redaction import REDACTED

from .errors import VendorRequestError, VendorUnavailableError

__all__ = [
    "HttpClient",
    "Query",
    "Redactor",
    "RetryConfig",
    "basic_auth_client",
    "retry_after",
]

logger = logging.getLogger("resolute.providers.http")

Query = Mapping[str, str | int] | Sequence[tuple[str, str | int]]
ErrorMessage = Callable[[Any], str | None]

_RETRYABLE_STATUS = frozenset({408, 429})
_MESSAGE_LIMIT = 500


class RetryConfig(BaseSettings):
    """Timeouts and in-place retries; env ``RESOLUTE_HTTP_*``. Tests shrink the backoffs."""

    model_config = SettingsConfigDict(env_prefix="RESOLUTE_HTTP_", frozen=True)

    timeout: float = Field(10.0, gt=0, description="seconds for one whole request")
    max_attempts: int = Field(4, ge=1, description="attempts in place, counting the first")
    backoff_base: float = Field(0.5, ge=0, description="first backoff in seconds")
    backoff_max: float = Field(20.0, ge=0, description="cap of one backoff")
    max_retry_after: float = Field(60.0, ge=0, description="longest vendor-requested wait")

    def backoff(self, attempt: int) -> float:
        """Equal jitter: half the exponential step guaranteed, half random."""
        step = min(self.backoff_max, self.backoff_base * 2.0 ** (attempt - 1))
        return step / 2 + random.uniform(0, step / 2)


class Redactor:
    """Replaces known secret values in text bound for logs, errors or the event log."""

    def __init__(self, secrets: Iterable[SecretStr | str | None]) -> None:
        values = (s.get_secret_value() if isinstance(s, SecretStr) else s for s in secrets)
        # Longest first so that a secret containing another is replaced whole.
        self._values = sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, REDACTED)
        return text


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the vendor asks us to wait: ``Retry-After`` (seconds or HTTP date),
    PagerDuty's ``ratelimit-reset`` (seconds) or Atlassian's ``X-RateLimit-Reset`` (ISO)."""
    now = time.time() if now is None else now
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    if value := lowered.get("retry-after"):
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    if value := lowered.get("ratelimit-reset"):
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    if value := lowered.get("x-ratelimit-reset"):
        try:
            reset = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if reset.tzinfo is None:
            reset = reset.replace(tzinfo=UTC)
        return max(0.0, reset.timestamp() - now)
    return None


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class HttpClient:
    """JSON over HTTP for one vendor, with the retry rules above."""

    def __init__(
        self,
        vendor: str,
        base_url: str,
        *,
        error_message: ErrorMessage,
        retry: RetryConfig | None = None,
        auth_headers: Mapping[str, SecretStr] | None = None,
        headers: Mapping[str, str] | None = None,
        redact: Redactor | None = None,
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self.retry = retry or RetryConfig()
        self._error_message = error_message
        self._auth_headers = dict(auth_headers or {})
        self._headers = dict(headers or {})
        self._redact = redact or Redactor(self._auth_headers.values())
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily: a session must be made inside the event loop that uses it.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.retry.timeout)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Query | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        replay_safe: bool | None = None,
    ) -> Any:
        """Send one logical request; return the decoded JSON body (None when empty)."""
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        safe = method.upper() != "POST" if replay_safe is None else replay_safe
        all_headers = {k: v.get_secret_value() for k, v in self._auth_headers.items()}
        all_headers.update(self._headers)
        all_headers.update(headers or {})
        attempts = self.retry.max_attempts
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                async with self._client().request(
                    method, url, params=params, json=json_body, headers=all_headers
                ) as resp:
                    status, raw, resp_headers = resp.status, await resp.read(), dict(resp.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Only a refused connection proves the vendor never saw the request.
                unseen = isinstance(exc, aiohttp.ClientConnectorError)
                problem = f"{type(exc).__name__}: {self._redact(str(exc)) or 'no detail'}"
                if attempt == attempts or not (safe or unseen):
                    raise VendorUnavailableError(self.vendor, operation, problem) from None
                await self._pause(operation, problem, attempt, self.retry.backoff(attempt))
                continue
            elapsed = (time.monotonic() - started) * 1000
            logger.debug("%s %s %s -> %d in %.0f ms", self.vendor, method, path, status, elapsed)
            body = _parse(raw)
            if status < 400 and isinstance(body, str):  # e.g. a proxy's HTML page
                raise VendorUnavailableError(
                    self.vendor, operation, f"HTTP {status} with a non-JSON body", status
                )
            if status < 400:
                return body
            message = self._message(body)
            if status not in _RETRYABLE_STATUS and status < 500:
                raise VendorRequestError(self.vendor, operation, status, message)
            problem = f"HTTP {status}: {message}"
            hint = retry_after(resp_headers)
            if attempt == attempts or not (safe or status == 429):
                raise VendorUnavailableError(self.vendor, operation, problem, status)
            if hint is not None and hint > self.retry.max_retry_after:
                raise VendorUnavailableError(
                    self.vendor, operation, f"{problem} (asked to wait {hint:.0f} s)", status
                )
            await self._pause(
                operation, problem, attempt, max(hint or 0.0, self.retry.backoff(attempt))
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _message(self, body: Any) -> str:
        message = self._error_message(body) if body is not None else None
        if not message:
            message = body.strip() if isinstance(body, str) else ""
        return self._redact(message or "no error details in the response")[:_MESSAGE_LIMIT]

    async def _pause(self, operation: str, problem: str, attempt: int, delay: float) -> None:
        logger.warning(
            "%s %s: %s; retrying in %.2f s (attempt %d of %d)",
            self.vendor,
            operation,
            problem,
            delay,
            attempt,
            self.retry.max_attempts,
        )
        await asyncio.sleep(delay)


class AtlassianSettings(BaseSettings):
    """``<PRODUCT>_BASE_URL``, ``_EMAIL`` and ``_API_TOKEN`` of an Atlassian Cloud product."""

    base_url: str | None = None
    email: str | None = None
    api_token: SecretStr | None = None

    @classmethod
    def read(cls, product: str, example_url: str) -> tuple[str, str, SecretStr]:
        prefix = f"{product.upper()}_"
        env = cls(_env_prefix=prefix)
        if not (env.base_url and env.email and env.api_token):
            raise ConfigurationError(
                f"{product} needs {prefix}BASE_URL ({example_url}), {prefix}EMAIL and "
                f"{prefix}API_TOKEN"
            )
        return env.base_url, env.email, env.api_token


def basic_auth_client(
    vendor: str,
    base_url: str,
    *,
    email: str,
    api_token: str | SecretStr,
    error_message: ErrorMessage,
    retry: RetryConfig | None = None,
) -> HttpClient:
    """A client for Atlassian's scheme: HTTP Basic with an email and an API token; the
    token and the encoded pair never reach a log or an error."""
    token = api_token if isinstance(api_token, SecretStr) else SecretStr(api_token)
    basic = base64.b64encode(f"{email}:{token.get_secret_value()}".encode()).decode()
    return HttpClient(
        vendor,
        base_url,
        error_message=error_message,
        retry=retry,
        auth_headers={"Authorization": SecretStr(f"Basic {basic}")},
        headers={"Accept": "application/json"},
        redact=Redactor([token, basic]),
    )
