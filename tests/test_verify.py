"""Webhook verification with published HMAC vectors (RFC 4231 / RFC 2202), independent
of the PagerDuty contracts (tests/test_webhooks.py runs those)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict
from pydantic import SecretStr

from orchestrator import ConfigurationError
from orchestrator.verify import (
    HmacSignature,
    NoVerification,
    Verifier,
    no_verification,
    pagerduty_v3,
)

# RFC 4231 test case 2 and RFC 2202 test case 2: key "Jefe".
BODY = b"what do ya want for nothing?"
SHA256 = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
SHA1 = "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
OTHER = "0" * 64


def _hmac(
    *,
    secrets: list[str | SecretStr] | str = ["Jefe"],  # noqa: B006 (never mutated)
    header: str = "X-Sig",
    prefix: str = "v1=",
    algorithm: str = "sha256",
) -> HmacSignature:
    return HmacSignature(header=header, secrets=secrets, prefix=prefix, algorithm=algorithm)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (f"v1={SHA256}", True),
        (f"v1={SHA256.upper()}", True),  # hex case does not matter
        (f"v1={OTHER},v1={SHA256}", True),  # the sender rotating: any signature may match
        (f" v1={OTHER} , v1={SHA256} ", True),
        (f"v2={SHA256}", False),  # only the configured prefix counts
        (SHA256, False),
        (f"v1={SHA256[:-1]}", False),
        (f"v1={OTHER}", False),
        ("", False),
        ("v1=ünïcödé", False),  # never a TypeError from compare_digest
    ],
)
def test_rfc4231_vector(value: str, valid: bool) -> None:
    assert _hmac(prefix="v1=").verify(BODY, {"X-Sig": value}) is valid


def test_header_name_is_case_insensitive_and_missing_header_fails() -> None:
    v = _hmac()
    assert v.verify(BODY, {"x-sig": f"v1={SHA256}"})
    assert v.verify(BODY, CIMultiDict({"X-SIG": f"v1={SHA256}"}))
    assert not v.verify(BODY, {})
    assert not v.verify(BODY + b" ", {"X-Sig": f"v1={SHA256}"})  # the raw bytes are signed


def test_receiver_rotation_accepts_any_configured_secret() -> None:
    v = _hmac(secrets=["new-secret", SecretStr("Jefe")])
    assert v.verify(BODY, {"X-Sig": f"v1={SHA256}"})
    assert v.signature(BODY, "Jefe") == f"v1={SHA256}"
    assert "Jefe" not in repr(v)


def test_other_algorithm_and_prefix() -> None:
    v = _hmac(header="X-Hub-Signature", prefix="sha1=", algorithm="sha1")
    assert v.verify(BODY, {"X-Hub-Signature": f"sha1={SHA1}"})
    assert not v.verify(BODY, {"X-Hub-Signature": f"sha256={SHA256}"})


def test_a_single_string_is_one_secret() -> None:
    assert _hmac(secrets="Jefe").verify(BODY, {"X-Sig": f"v1={SHA256}"})
    assert not _hmac(secrets="Jefe").verify(BODY, {"X-Sig": "v1=" + "J" * 64})


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least one non-empty secret"):
        _hmac(secrets=["", ""])
    with pytest.raises(ConfigurationError, match="unknown HMAC algorithm"):
        _hmac(algorithm="md6")


def test_pagerduty_v3_and_no_verification() -> None:
    pd = pagerduty_v3(["Jefe"])
    assert pd.header == "X-PagerDuty-Signature" and pd.prefix == "v1="
    assert pd.verify(BODY, {"X-PagerDuty-Signature": f"v1={SHA256}"})
    assert isinstance(pd, Verifier) and isinstance(no_verification(), Verifier)
    assert isinstance(no_verification(), NoVerification)
    assert no_verification().verify(b"anything", {})
