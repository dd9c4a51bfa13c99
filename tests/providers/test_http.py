"""The shared HTTP layer: retries, Retry-After, error classification, redaction."""

from __future__ import annotations

import logging
import time
from email.utils import formatdate

import pytest
from pydantic import SecretStr

from orchestrator.errors import NonRetryableError
from orchestrator.redaction import REDACTED
from providers.errors import VendorRequestError, VendorUnavailableError
from providers.http import HttpClient, Redactor, RetryConfig, retry_after
from providers.pagerduty import PagerDutyProvider
from providers.sandbox import Sandbox


def test_retry_after_reads_seconds_dates_and_vendor_headers() -> None:
    now = 1_700_000_000.0
    assert retry_after({"Retry-After": "3"}, now) == 3.0
    assert retry_after({"retry-after": formatdate(now + 7, usegmt=True)}, now) == pytest.approx(7)
    assert retry_after({"ratelimit-reset": "20"}, now) == 20.0  # PagerDuty
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 60))
    assert retry_after({"X-RateLimit-Reset": iso}, now) == pytest.approx(60)  # Atlassian
    assert retry_after({"Retry-After": "soon"}, now) is None
    assert retry_after({}, now) is None


def test_backoff_grows_with_jitter_and_stays_under_the_cap() -> None:
    config = RetryConfig(backoff_base=1.0, backoff_max=4.0)
    for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (2, 4), (2, 4)], 1):
        for _ in range(20):
            assert low <= config.backoff(attempt) <= high


def test_retry_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESOLUTE_HTTP_MAX_ATTEMPTS", "7")
    monkeypatch.setenv("RESOLUTE_HTTP_TIMEOUT", "2.5")
    config = RetryConfig()
    assert (config.max_attempts, config.timeout) == (7, 2.5)


def test_redactor_replaces_every_known_secret() -> None:
    redact = Redactor([SecretStr("s3cret-token"), "abcd1234", None, ""])
    assert redact("token s3cret-token and abcd1234!") == f"token {REDACTED} and {REDACTED}!"


async def test_429_is_retried_after_retry_after_then_succeeds(
    sandbox: Sandbox, pd: PagerDutyProvider
) -> None:
    sandbox.inject("pagerduty", "/incidents", 429, times=1, retry_after=1)
    started = time.monotonic()
    answer = await pd.rest.request("GET", "/incidents", operation="list incidents")
    assert time.monotonic() - started >= 1.0
    assert "incidents" in answer


async def test_5xx_and_dropped_connections_are_retried(
    sandbox: Sandbox, pd: PagerDutyProvider
) -> None:
    sandbox.inject("pagerduty", "/oncalls", 503, times=1)
    sandbox.inject("pagerduty", "/oncalls", disconnect="before", times=1)
    answer = await pd.rest.request("GET", "/oncalls", operation="list oncalls")
    assert answer["oncalls"]
    hits = [x for x in sandbox.traffic if x.path == "/oncalls"][-3:]
    assert [x.injected for x in hits] == [True, True, False]


async def test_retries_give_up_retryably(sandbox: Sandbox, pd: PagerDutyProvider) -> None:
    sandbox.inject("pagerduty", "/oncalls", 502, times=5)
    with pytest.raises(VendorUnavailableError) as err:
        await pd.rest.request("GET", "/oncalls", operation="list oncalls")
    assert err.value.status == 502
    assert not isinstance(err.value, NonRetryableError)
    assert "injected fault" in str(err.value)


async def test_a_long_retry_after_is_left_to_the_engine(
    sandbox: Sandbox, pd: PagerDutyProvider
) -> None:
    sandbox.inject("pagerduty", "/oncalls", 429, retry_after=3600)
    started = time.monotonic()
    with pytest.raises(VendorUnavailableError, match="asked to wait 3600 s"):
        await pd.rest.request("GET", "/oncalls", operation="list oncalls")
    assert time.monotonic() - started < 1


async def test_4xx_is_not_retried_and_carries_the_vendor_message(
    sandbox: Sandbox, pd: PagerDutyProvider
) -> None:
    before = len(sandbox.traffic)
    with pytest.raises(VendorRequestError) as err:
        await pd.rest.request("GET", "/incidents/NOPE", operation="get incident")
    assert isinstance(err.value, NonRetryableError)
    assert (err.value.status, err.value.vendor_message) == (404, "Not Found (code 2100)")
    assert len(sandbox.traffic) == before + 1


async def test_not_replay_safe_requests_are_not_repeated_after_ambiguous_failures(
    sandbox: Sandbox, pd: PagerDutyProvider
) -> None:
    sandbox.inject("pagerduty", "/incidents/Q999999/notes", 500, times=1)
    before = len(sandbox.traffic)
    with pytest.raises(VendorUnavailableError):
        await pd.rest.request(
            "POST", "/incidents/Q999999/notes", operation="add note", json_body={}
        )
    assert len(sandbox.traffic) == before + 1  # the engine's retry decides, not this layer


async def test_not_replay_safe_requests_are_retried_on_429(
    sandbox: Sandbox, pd: PagerDutyProvider
) -> None:
    sandbox.inject("pagerduty", "/incidents/Q999999/notes", 429, times=1, retry_after=0)
    with pytest.raises(VendorRequestError, match="404"):
        await pd.rest.request(
            "POST", "/incidents/Q999999/notes", operation="add note", json_body={}
        )


async def test_timeouts_are_retryable() -> None:
    client = HttpClient(
        "test",
        "http://127.0.0.1:9",  # discard port: nothing listens on loopback
        error_message=lambda body: None,
        retry=RetryConfig(max_attempts=2, backoff_base=0.0, timeout=1.0),
    )
    try:
        with pytest.raises(VendorUnavailableError, match="ClientConnectorError"):
            await client.request("GET", "/", operation="probe")
    finally:
        await client.close()


async def test_secrets_never_reach_errors_or_logs(
    sandbox: Sandbox, sandbox_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    key = sandbox_env["PAGERDUTY_API_KEY"]
    wrong = PagerDutyProvider(
        api_key="wrong-key-123456",
        base_url=sandbox_env["PAGERDUTY_BASE_URL"],
        retry=RetryConfig(max_attempts=2, backoff_base=0.0),
    )
    caplog.set_level(logging.DEBUG)
    sandbox.inject("pagerduty", "/incidents", 503, times=1)
    try:
        with pytest.raises(VendorRequestError) as err:
            await wrong.rest.request("GET", "/incidents", operation="list incidents")
    finally:
        await wrong.close()
    assert err.value.status == 401
    assert "Authentication failed" in str(err.value)
    text = str(err.value) + caplog.text
    assert "wrong-key-123456" not in text and key not in text
    assert "retrying" in caplog.text
