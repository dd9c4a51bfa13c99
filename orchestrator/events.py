"""The event vocabulary: frozen pydantic models, one discriminated union.

The ``type`` names are the audit vocabulary operators query in SQL. Columns common to
every event (``type``, ``node_path``, ``step``, ``attempt``) live in their own columns
of ``run_events``; the rest of an event is its ``data`` (jsonb).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "COLUMNS",
    "BranchDecided",
    "Event",
    "ParallelCompleted",
    "ParallelStarted",
    "RunCancelled",
    "RunCompleted",
    "RunFailed",
    "RunResumed",
    "RunStarted",
    "SignalReceived",
    "SignalTimedOut",
    "SignalWaiting",
    "StepCancelled",
    "StepCompleted",
    "StepFailed",
    "StepStarted",
    "TimerFired",
    "TimerStarted",
    "event_data",
    "parse_event",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    node_path: str | None = None
    step: str | None = None
    attempt: int | None = None
    # Filled in when read back from the log; never part of ``data``.
    seq: int | None = None
    recorded_at: datetime | None = None
    worker_id: str | None = None


class RunStarted(_Event):
    type: Literal["run.started"] = "run.started"
    flow: str
    fingerprint: str
    input: Any = None
    correlation_key: str | None = None
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    trigger: str = "manual"


class RunResumed(_Event):
    type: Literal["run.resumed"] = "run.resumed"
    reason: Literal["recovery", "timer", "retry", "signal", "restart", "retry-run"]
    previous_worker: str | None = None


class RunCompleted(_Event):
    type: Literal["run.completed"] = "run.completed"
    result: Any = None


class RunFailed(_Event):
    type: Literal["run.failed"] = "run.failed"
    error: str


class RunCancelled(_Event):
    type: Literal["run.cancelled"] = "run.cancelled"
    reason: str
    by: str | None = None


class StepStarted(_Event):
    type: Literal["step.started"] = "step.started"
    node: str
    input: Any = None  # the resolved input, secrets redacted...
    input_ref: str | None = None  # ...or the alias of the recorded output it is


class StepCompleted(_Event):
    type: Literal["step.completed"] = "step.completed"
    output: Any = None
    duration_ms: float | None = None


class StepFailed(_Event):
    type: Literal["step.failed"] = "step.failed"
    error: str
    error_type: str
    retryable: bool
    next_attempt_at: datetime | None = None
    duration_ms: float | None = None


class StepCancelled(_Event):
    type: Literal["step.cancelled"] = "step.cancelled"
    reason: str


class BranchDecided(_Event):
    type: Literal["branch.decided"] = "branch.decided"
    arm: int  # index of the arm taken; -1 when no arm matched and there is no otherwise
    label: str


class ParallelStarted(_Event):
    type: Literal["parallel.started"] = "parallel.started"
    branches: int


class ParallelCompleted(_Event):
    type: Literal["parallel.completed"] = "parallel.completed"
    status: Literal["completed", "failed"]
    cancelled: list[str] = Field(default_factory=list)


class TimerStarted(_Event):
    type: Literal["timer.started"] = "timer.started"
    fire_at: datetime


class TimerFired(_Event):
    type: Literal["timer.fired"] = "timer.fired"


class SignalWaiting(_Event):
    type: Literal["signal.waiting"] = "signal.waiting"
    name: str
    timeout_at: datetime | None = None
    correlation_key: str | None = None


class SignalReceived(_Event):
    type: Literal["signal.received"] = "signal.received"
    name: str
    payload: Any = None
    signal_id: int | None = None


class SignalTimedOut(_Event):
    type: Literal["signal.timed_out"] = "signal.timed_out"
    name: str


Event = Annotated[
    RunStarted
    | RunResumed
    | RunCompleted
    | RunFailed
    | RunCancelled
    | StepStarted
    | StepCompleted
    | StepFailed
    | StepCancelled
    | BranchDecided
    | ParallelStarted
    | ParallelCompleted
    | TimerStarted
    | TimerFired
    | SignalWaiting
    | SignalReceived
    | SignalTimedOut,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)

COLUMNS = {"type", "node_path", "step", "attempt", "seq", "recorded_at", "worker_id"}


def event_data(event: _Event) -> str:
    """The event's ``data`` column as JSON text."""
    return event.model_dump_json(exclude=COLUMNS)


def parse_event(
    *,
    type: str,
    data: dict[str, Any] | str,
    node_path: str | None = None,
    step: str | None = None,
    attempt: int | None = None,
    seq: int | None = None,
    recorded_at: datetime | None = None,
    worker_id: str | None = None,
) -> Event:
    """Rebuild an event from a ``run_events`` row."""
    fields = json.loads(data) if isinstance(data, str) else dict(data)
    fields.update(
        type=type,
        node_path=node_path,
        step=step,
        attempt=attempt,
        seq=seq,
        recorded_at=recorded_at,
        worker_id=worker_id,
    )
    return _ADAPTER.validate_python(fields)
