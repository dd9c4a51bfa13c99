"""Structured logs: every line carries the run id, flow and step it is about."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

__all__ = ["ContextAdapter", "JsonFormatter", "configure_logging", "logger_for"]

_CONTEXT_KEYS = ("run_id", "flow", "step", "attempt", "worker_id", "delivery_id")


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """Merges its context into each record's ``extra`` (and the message, for text logs)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs


def logger_for(name: str, **context: Any) -> ContextAdapter:
    return ContextAdapter(logging.getLogger(name), {k: v for k, v in context.items() if v})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in _CONTEXT_KEYS:
            if (value := getattr(record, key, None)) is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        ctx = " ".join(
            f"{k}={v}" for k in _CONTEXT_KEYS if (v := getattr(record, k, None)) is not None
        )
        return f"{base} [{ctx}]" if ctx else base


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if fmt == "json"
        else _TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # APScheduler reports every heartbeat and recovery tick at INFO: noise, not news.
    logging.getLogger("apscheduler").setLevel(max(root.level, logging.WARNING))
