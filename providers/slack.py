"""Slack (Web API through slack-sdk's ``AsyncWebClient``): post, update, DM, look up users.

slack-sdk's own retry handlers retry 429 (honouring ``Retry-After``), 500/503 and
connection errors in place. Posting is at-least-once: Slack has no idempotency key for
``chat.postMessage``, so a step re-run after a crash (or a retried 5xx that Slack had in
fact processed) can post twice.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import aiohttp
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from orchestrator.errors import ConfigurationError
from orchestrator.node import Node, RetryPolicy, StepContext

from .binding import Bind, provider_node
from .errors import VendorRequestError, VendorUnavailableError
from .http import Redactor, RetryConfig

__all__ = [
    "Provider",
    "SlackMessage",
    "SlackProvider",
    "SlackUser",
    "dm_user",
    "lookup_user",
    "post_message",
    "update_message",
]

# ok:false errors that mean "Slack had a problem", not "your request is wrong".
_TRANSIENT = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
    }
)
_MAX_BLOCKS = 50  # Block Kit's documented limit per message


class _Env(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLACK_")

    bot_token: SecretStr | None = None
    incident_channel: str | None = None
    base_url: str = AsyncWebClient.BASE_URL


class SlackProvider:
    """A bot token, the default incident channel and an ``AsyncWebClient``."""

    name = "slack"

    def __init__(
        self,
        *,
        bot_token: str | SecretStr,
        incident_channel: str | None = None,
        base_url: str = AsyncWebClient.BASE_URL,
        retry: RetryConfig | None = None,
    ) -> None:
        self.bot_token = bot_token if isinstance(bot_token, SecretStr) else SecretStr(bot_token)
        self.incident_channel = incident_channel
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.retry = retry or RetryConfig()
        self.redact = Redactor([self.bot_token])
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None

    @classmethod
    def from_env(cls, retry: RetryConfig | None = None) -> SlackProvider:
        """Read ``SLACK_BOT_TOKEN``, ``SLACK_INCIDENT_CHANNEL`` and ``SLACK_BASE_URL``."""
        env = _Env()
        if env.bot_token is None:
            raise ConfigurationError("Slack needs SLACK_BOT_TOKEN (a bot token, xoxb-...)")
        return cls(
            bot_token=env.bot_token,
            incident_channel=env.incident_channel,
            base_url=env.base_url,
            retry=retry or RetryConfig(),
        )

    def client(self) -> AsyncWebClient:
        # Built lazily: its aiohttp session must belong to the running event loop.
        if self._client is None or self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.retry.timeout)
            )
            retries = self.retry.max_attempts - 1
            backoff = BackoffRetryIntervalCalculator(backoff_factor=self.retry.backoff_base)
            self._client = AsyncWebClient(
                token=self.bot_token.get_secret_value(),
                base_url=self.base_url,
                session=self._session,
                timeout=max(1, round(self.retry.timeout)),
                retry_handlers=[
                    AsyncRateLimitErrorRetryHandler(max_retry_count=retries),
                    AsyncServerErrorRetryHandler(
                        max_retry_count=retries, interval_calculator=backoff
                    ),
                    AsyncConnectionErrorRetryHandler(
                        max_retry_count=retries, interval_calculator=backoff
                    ),
                ],
            )
        return self._client

    async def call(self, operation: str, request: Awaitable[AsyncSlackResponse]) -> dict[str, Any]:
        """Await one SDK call; map its failures onto the provider error hierarchy."""
        try:
            response = await request
        except SlackApiError as exc:
            status = int(exc.response.status_code)
            data = exc.response.data if isinstance(exc.response.data, dict) else {}
            error = str(data.get("error") or f"HTTP {status}")
            if data.get("needed"):
                error += f" (needs scope {data['needed']}, token has {data.get('provided')})"
            error = self.redact(error)
            if status == 429 or status >= 500 or data.get("error") in _TRANSIENT:
                raise VendorUnavailableError("slack", operation, error, status) from None
            raise VendorRequestError("slack", operation, status, error) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = self.redact(f"{type(exc).__name__}: {exc}")
            raise VendorUnavailableError("slack", operation, problem) from None
        return dict(response.data) if isinstance(response.data, dict) else {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = self._client = None


Provider = SlackProvider


class SlackMessage(BaseModel):
    channel: str
    ts: str
    user_id: str | None = None


class SlackUser(BaseModel):
    id: str
    name: str | None = None
    real_name: str | None = None
    display_name: str | None = None
    email: str | None = None
    tz: str | None = None


Blocks = list[dict[str, Any]]


class PostMessageInput(BaseModel):
    text: str = Field(min_length=1, description="fallback text for notifications")
    channel: str | None = None
    blocks: Blocks | None = Field(None, max_length=_MAX_BLOCKS)
    thread_ts: str | None = None


class UpdateMessageInput(BaseModel):
    channel: str = Field(min_length=1)
    ts: str = Field(min_length=1)
    text: str = Field(min_length=1)
    blocks: Blocks | None = Field(None, max_length=_MAX_BLOCKS)


class DmInput(BaseModel):
    email: str = Field(min_length=3)
    text: str = Field(min_length=1)
    blocks: Blocks | None = Field(None, max_length=_MAX_BLOCKS)


class LookupInput(BaseModel):
    email: str = Field(min_length=3)


def _user(data: dict[str, Any]) -> SlackUser:
    profile = data.get("profile") or {}
    return SlackUser(
        id=data["id"],
        name=data.get("name"),
        real_name=data.get("real_name") or profile.get("real_name"),
        display_name=profile.get("display_name"),
        email=profile.get("email"),
        tz=data.get("tz"),
    )


async def _post(
    slack: SlackProvider,
    channel: str,
    text: str,
    blocks: Blocks | None,
    thread_ts: str | None = None,
) -> dict[str, Any]:
    return await slack.call(
        "chat.postMessage",
        slack.client().chat_postMessage(
            channel=channel, text=text, blocks=blocks, thread_ts=thread_ts
        ),
    )


async def _post_message(ctx: StepContext, inp: PostMessageInput) -> SlackMessage:
    slack = ctx.provider(SlackProvider)
    channel = inp.channel or slack.incident_channel
    if not channel:
        raise ConfigurationError(
            "slack.post_message needs a channel: pass channel=... or set SLACK_INCIDENT_CHANNEL"
        )
    answer = await _post(slack, channel, inp.text, inp.blocks, inp.thread_ts)
    return SlackMessage(channel=answer["channel"], ts=answer["ts"])


async def _update_message(ctx: StepContext, inp: UpdateMessageInput) -> SlackMessage:
    slack = ctx.provider(SlackProvider)
    answer = await slack.call(
        "chat.update",
        slack.client().chat_update(
            channel=inp.channel, ts=inp.ts, text=inp.text, blocks=inp.blocks
        ),
    )
    return SlackMessage(channel=answer["channel"], ts=answer["ts"])


async def _lookup(slack: SlackProvider, email: str) -> SlackUser:
    answer = await slack.call(
        "users.lookupByEmail", slack.client().users_lookupByEmail(email=email)
    )
    return _user(answer["user"])


async def _lookup_user(ctx: StepContext, inp: LookupInput) -> SlackUser:
    return await _lookup(ctx.provider(SlackProvider), inp.email)


async def _dm_user(ctx: StepContext, inp: DmInput) -> SlackMessage:
    slack = ctx.provider(SlackProvider)
    user = await _lookup(slack, inp.email)
    opened = await slack.call(
        "conversations.open", slack.client().conversations_open(users=user.id)
    )
    answer = await _post(slack, opened["channel"]["id"], inp.text, inp.blocks)
    return SlackMessage(channel=answer["channel"], ts=answer["ts"], user_id=user.id)


def post_message(
    *,
    text: Bind[str],
    channel: Bind[str] | None = None,
    blocks: Bind[Blocks] | None = None,
    thread_ts: Bind[str] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Post to ``channel`` (default ``SLACK_INCIDENT_CHANNEL``); at-least-once."""
    return provider_node(
        "slack.post_message",
        _post_message,
        PostMessageInput,
        SlackMessage,
        {"text": text, "channel": channel, "blocks": blocks, "thread_ts": thread_ts},
        retry=retry,
        timeout=timeout,
    )


def update_message(
    *,
    channel: Bind[str],
    ts: Bind[str],
    text: Bind[str],
    blocks: Bind[Blocks] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Replace the text/blocks of a message the bot posted (idempotent)."""
    return provider_node(
        "slack.update_message",
        _update_message,
        UpdateMessageInput,
        SlackMessage,
        {"channel": channel, "ts": ts, "text": text, "blocks": blocks},
        retry=retry,
        timeout=timeout,
    )


def dm_user(
    *,
    email: Bind[str],
    text: Bind[str],
    blocks: Bind[Blocks] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Direct-message the user with this email (lookup, open DM, post); at-least-once."""
    return provider_node(
        "slack.dm_user",
        _dm_user,
        DmInput,
        SlackMessage,
        {"email": email, "text": text, "blocks": blocks},
        retry=retry,
        timeout=timeout,
    )


def lookup_user(
    *, email: Bind[str], retry: RetryPolicy | None = None, timeout: float | None = None
) -> Node:
    """The Slack user with this email (``users.lookupByEmail``)."""
    return provider_node(
        "slack.lookup_user",
        _lookup_user,
        LookupInput,
        SlackUser,
        {"email": email},
        retry=retry,
        timeout=timeout,
    )
