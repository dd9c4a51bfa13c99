"""Service settings: ``RESOLUTE_*`` environment variables, or a ``.env`` file beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """What ``resolute serve`` and ``resolute api`` read at start."""

    model_config = SettingsConfigDict(
        env_prefix="RESOLUTE_", env_file=".env", extra="ignore", validate_default=True
    )

    database_url: str | None = Field(
        None, description="postgresql://user:pass@host:port/db; unset: the embedded database"
    )
    home: Path = Field(Path(".resolute"), description="where the embedded database lives")
    api_token: SecretStr | None = Field(
        None, description="bearer token of /api/v1; unset: the API answers 503"
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # PagerDuty guarantees deliveries up to 55 KB and drops those over 256 KB.
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    worker_id: str | None = None
    pool_size: int = Field(10, gt=0, description="database connections of the HTTP server")
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="how long in-flight requests may finish on SIGTERM"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    def export(self) -> None:
        """Put values that came from ``.env`` into the environment, where the core (the
        worker's database URL and identity, the embedded home) looks for them."""
        values = {
            "RESOLUTE_DATABASE_URL": self.database_url,
            "RESOLUTE_HOME": str(self.home),
            "RESOLUTE_WORKER_ID": self.worker_id,
        }
        for key, value in values.items():
            if value is not None:
                os.environ.setdefault(key, value)
