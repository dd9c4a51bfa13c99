"""Triggers: what starts a run of a flow. Plain values attached with ``triggered_by``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ManualTrigger",
    "ScheduleTrigger",
    "SignalTrigger",
    "Trigger",
    "WebhookTrigger",
    "manual",
    "schedule",
    "signal",
    "webhook",
]


@dataclass(frozen=True, slots=True)
class ManualTrigger:
    """Runs started by ``Client.start``, the API or ``resolute trigger``."""

    kind: str = "manual"


@dataclass(frozen=True, slots=True)
class WebhookTrigger:
    """An HTTP route; ``verify`` checks the delivery, ``correlate`` extracts the key,
    ``signal_name`` names the signal a delivery to an active run becomes (default: the
    payload's event type)."""

    path: str
    verify: Any = None
    dedup: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None
    correlate: Callable[[dict[str, Any]], str | None] | None = None
    deliver_to_active: bool = False
    signal_name: Callable[[dict[str, Any]], str | None] | None = None
    kind: str = "webhook"


@dataclass(frozen=True, slots=True)
class ScheduleTrigger:
    """A cron schedule (five fields), evaluated in ``timezone``."""

    cron: str
    timezone: str = "UTC"
    kind: str = "schedule"


@dataclass(frozen=True, slots=True)
class SignalTrigger:
    """Starts a run when the named signal is sent without a target run."""

    name: str
    kind: str = "signal"


Trigger = ManualTrigger | WebhookTrigger | ScheduleTrigger | SignalTrigger


def manual() -> ManualTrigger:
    return ManualTrigger()


def webhook(
    path: str,
    *,
    verify: Any = None,
    dedup: Callable[[dict[str, Any], dict[str, Any]], str | None] | None = None,
    correlate: Callable[[dict[str, Any]], str | None] | None = None,
    deliver_to_active: bool = False,
    signal_name: Callable[[dict[str, Any]], str | None] | None = None,
) -> WebhookTrigger:
    if not path.startswith("/"):
        raise ValueError(f"webhook path must start with '/': {path!r}")
    return WebhookTrigger(path, verify, dedup, correlate, deliver_to_active, signal_name)


def schedule(cron: str, *, timezone: str = "UTC") -> ScheduleTrigger:
    if len(cron.split()) != 5:
        raise ValueError(f"cron expression must have five fields: {cron!r}")
    return ScheduleTrigger(cron, timezone)


def signal(name: str) -> SignalTrigger:
    if not name:
        raise ValueError("signal trigger needs a name")
    return SignalTrigger(name)
