"""Service settings from ``RESOLUTE_*`` variables and a ``.env`` file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.settings import Settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("RESOLUTE_"):
            monkeypatch.delenv(key)
    s = Settings(_env_file=None)
    assert (s.host, s.port, s.max_body_bytes) == ("127.0.0.1", 8080, 1024 * 1024)
    assert s.api_token is None and s.database_url is None and s.log_format == "text"


def test_environment_beats_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("RESOLUTE_API_TOKEN=from-file\nRESOLUTE_PORT=9000\nOTHER=x\n")
    monkeypatch.setenv("RESOLUTE_PORT", "9100")
    monkeypatch.setenv("RESOLUTE_LOG_LEVEL", "debug")
    s = Settings(_env_file=env_file)
    assert s.port == 9100 and s.log_level == "DEBUG"
    assert s.api_token is not None and s.api_token.get_secret_value() == "from-file"
    assert "from-file" not in repr(s)


def test_export_fills_only_what_the_environment_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"RESOLUTE_DATABASE_URL": "postgresql://env/db"}
    monkeypatch.setattr(os, "environ", environ)
    Settings(_env_file=None, database_url="postgresql://file/db", worker_id="api-1").export()
    assert environ == {
        "RESOLUTE_DATABASE_URL": "postgresql://env/db",
        "RESOLUTE_WORKER_ID": "api-1",
        "RESOLUTE_HOME": ".resolute",
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [("RESOLUTE_PORT", "http"), ("RESOLUTE_MAX_BODY_BYTES", "0"), ("RESOLUTE_LOG_FORMAT", "xml")],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=key.removeprefix("RESOLUTE_").lower()):
        Settings(_env_file=None)
