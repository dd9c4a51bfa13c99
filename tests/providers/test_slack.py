"""Slack nodes (slack-sdk's AsyncWebClient) against the sandbox."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.errors import ConfigurationError, NonRetryableError
from orchestrator.node import StepContext
from orchestrator.refs import Template
from providers import slack
from providers.errors import VendorRequestError, VendorUnavailableError
from providers.sandbox import Sandbox
from providers.slack import SlackProvider

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]

BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "Incident PFQZPSY"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "*Checkout latency* is high"}},
]


def _messages(sandbox: Sandbox) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sandbox.state()["slack"]["messages"]
    return messages


async def test_post_to_the_incident_channel_then_update(
    run: Run, make_ctx: MakeContext, slack_provider: SlackProvider, sandbox: Sandbox
) -> None:
    posted = await run(
        slack.post_message(text=Template("Incident {event.id}"), blocks=BLOCKS),
        make_ctx(slack_provider, outputs={"event": {"id": "PFQZPSY"}}),
    )
    assert posted.channel == "C0INCIDENT"  # SLACK_INCIDENT_CHANNEL=#incidents
    updated = await run(
        slack.update_message(channel=posted.channel, ts=posted.ts, text="Resolved"),
        make_ctx(slack_provider),
    )
    assert updated.ts == posted.ts
    stored = next(m for m in _messages(sandbox) if m["ts"] == posted.ts)
    assert (stored["text"], stored["blocks"]) == ("Resolved", BLOCKS)
    threaded = await run(
        slack.post_message(text="follow-up", channel="ops", thread_ts=posted.ts),
        make_ctx(slack_provider),
    )
    assert next(m for m in _messages(sandbox) if m["ts"] == threaded.ts)["thread_ts"] == posted.ts


async def test_dm_user_by_email(
    run: Run, make_ctx: MakeContext, slack_provider: SlackProvider, sandbox: Sandbox
) -> None:
    sent = await run(
        slack.dm_user(email="bob@example.com", text="You are on call for PFQZPSY"),
        make_ctx(slack_provider),
    )
    assert (sent.user_id, sent.channel) == ("U0BOB0002", "D0BOB0002")
    assert sandbox.state()["slack"]["dms"]["U0BOB0002"] == "D0BOB0002"
    assert _messages(sandbox)[-1]["text"] == "You are on call for PFQZPSY"
    user = await run(slack.lookup_user(email="alice@example.com"), make_ctx(slack_provider))
    assert (user.id, user.real_name, user.tz) == ("U0ALICE01", "Alice Moreau", "Europe/Paris")


async def test_429_honours_retry_after_and_5xx_is_retried(
    run: Run, make_ctx: MakeContext, slack_provider: SlackProvider, sandbox: Sandbox
) -> None:
    sandbox.inject("slack", "/api/chat.postMessage", 429, retry_after=1)
    started = time.monotonic()
    await run(slack.post_message(text="after a rate limit"), make_ctx(slack_provider))
    assert time.monotonic() - started >= 1.0
    sandbox.inject("slack", "/api/users.lookupByEmail", 500)
    sandbox.inject("slack", "/api/users.lookupByEmail", 503)
    user = await run(slack.lookup_user(email="bob@example.com"), make_ctx(slack_provider))
    assert user.id == "U0BOB0002"


async def test_errors_map_to_retryable_or_not(
    run: Run, make_ctx: MakeContext, slack_provider: SlackProvider, sandbox: Sandbox
) -> None:
    with pytest.raises(VendorRequestError, match="channel_not_found") as err:
        await run(slack.post_message(text="x", channel="#nope"), make_ctx(slack_provider))
    assert isinstance(err.value, NonRetryableError)
    with pytest.raises(VendorRequestError, match="users_not_found"):
        await run(slack.dm_user(email="ghost@example.com", text="x"), make_ctx(slack_provider))
    with pytest.raises(VendorRequestError, match="invalid_blocks"):
        await run(
            slack.post_message(text="x", blocks=[{"type": "bogus"}]), make_ctx(slack_provider)
        )
    sandbox.inject("slack", "/api/chat.postMessage", 500, times=3)
    with pytest.raises(VendorUnavailableError) as unavailable:
        await run(slack.post_message(text="x"), make_ctx(slack_provider))
    assert not isinstance(unavailable.value, NonRetryableError)


async def test_bad_tokens_and_missing_channels(
    run: Run, make_ctx: MakeContext, sandbox_env: dict[str, str]
) -> None:
    wrong = SlackProvider(bot_token="xoxb-wrong-token-1234", base_url=sandbox_env["SLACK_BASE_URL"])
    try:
        with pytest.raises(VendorRequestError, match="invalid_auth") as err:
            await run(slack.post_message(text="x", channel="#incidents"), make_ctx(wrong))
        assert "xoxb-wrong-token-1234" not in str(err.value)
        with pytest.raises(ConfigurationError, match="SLACK_INCIDENT_CHANNEL"):
            await run(slack.post_message(text="x"), make_ctx(wrong))
    finally:
        await wrong.close()


async def test_the_sdk_sends_json_with_a_bearer_token(
    run: Run, make_ctx: MakeContext, slack_provider: SlackProvider, sandbox: Sandbox
) -> None:
    await run(slack.post_message(text="shape", blocks=BLOCKS), make_ctx(slack_provider))
    request = next(x for x in reversed(sandbox.traffic) if x.path == "/api/chat.postMessage")
    assert request.headers["Authorization"].startswith("Bearer xoxb-")
    assert json.loads(request.body)["blocks"] == BLOCKS


def test_too_many_blocks_are_rejected_before_sending() -> None:
    node = slack.post_message(text="x", blocks=[{"type": "divider"}] * 51)
    with pytest.raises(ValueError, match="at most 50"):
        node.input_adapter.validate_python(node.binding)
