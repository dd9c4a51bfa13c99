"""``fold(events) -> RunState``: a run's state rebuilt from its log, and the typed view of it.

Folding is pure and incremental: a worker folds the log once when it claims a run and
then applies each event it appends, so replay and live execution share one code path.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pydantic import TypeAdapter

from . import events as ev
from .errors import ReferenceResolutionError
from .refs import INPUT_ALIAS

if TYPE_CHECKING:
    from .definition import FlowDefinition

__all__ = [
    "FlowState",
    "RunState",
    "SignalRecord",
    "StepRecord",
    "TimerRecord",
    "WaitRecord",
    "fold",
]

T = TypeVar("T")

StepStatus = Literal["running", "completed", "retrying", "failed", "cancelled"]


# Records are immutable: ``apply`` replaces them, so ``copy`` only copies the dicts.
@dataclass(frozen=True, slots=True)
class StepRecord:
    alias: str
    status: StepStatus
    attempt: int
    failures: int = 0
    interrupted: bool = False  # started, no outcome, and the run was resumed since
    next_attempt_at: datetime | None = None
    error: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TimerRecord:
    fire_at: datetime
    fired: bool = False


@dataclass(frozen=True, slots=True)
class SignalRecord:
    name: str
    payload: Any
    node_path: str | None
    received_at: datetime | None
    signal_id: int | None = None


@dataclass(frozen=True, slots=True)
class WaitRecord:
    name: str
    timeout_at: datetime | None
    correlation_key: str | None
    done: bool = False  # received its signal or timed out


@dataclass(slots=True)
class RunState:
    """Everything ``decide`` needs, and what ``resolute replay`` prints."""

    run_id: str
    flow: str = ""
    fingerprint: str = ""
    input: Any = None
    correlation_key: str | None = None
    status: str = "pending"
    last_seq: int = 0
    last_event: str = ""
    steps: dict[str, StepRecord] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    branches: dict[str, int] = field(default_factory=dict)
    parallels: dict[str, str] = field(default_factory=dict)
    timers: dict[str, TimerRecord] = field(default_factory=dict)
    waits: dict[str, WaitRecord] = field(default_factory=dict)
    signals: list[SignalRecord] = field(default_factory=list)
    last_output: Any = None  # of the step that completed last: the run's default result
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")

    @property
    def phase(self) -> str:
        """What ``flow_runs.status`` says after an append: ``running`` while a step runs
        or work is due, ``waiting`` on a timer, a retry's backoff or a signal."""
        if self.terminal:
            return self.status
        if any(rec.status == "running" for rec in self.steps.values()):
            return "running"
        waiting = self.next_wake() is not None or any(not w.done for w in self.waits.values())
        return "waiting" if waiting else "running"

    def next_wake(self) -> datetime | None:
        """The earliest pending timer, retry or signal timeout."""
        times = [t.fire_at for t in self.timers.values() if not t.fired]
        times += [
            r.next_attempt_at
            for r in self.steps.values()
            if r.status == "retrying" and r.next_attempt_at is not None
        ]
        times += [w.timeout_at for w in self.waits.values() if not w.done and w.timeout_at]
        return min(times, default=None)

    def copy(self) -> RunState:
        """A copy safe to apply events to (records are immutable, so shallow)."""
        return replace(
            self,
            steps=dict(self.steps),
            outputs=dict(self.outputs),
            branches=dict(self.branches),
            parallels=dict(self.parallels),
            timers=dict(self.timers),
            waits=dict(self.waits),
            signals=list(self.signals),
        )

    def apply(self, e: ev.Event) -> None:
        if e.seq is not None:
            self.last_seq = e.seq
        self.last_event = e.type
        path = e.node_path or ""
        match e:
            case ev.RunStarted():
                self.flow, self.fingerprint, self.input = e.flow, e.fingerprint, e.input
                self.correlation_key = e.correlation_key
                self.status, self.started_at = "running", e.recorded_at
            case ev.RunResumed():
                self.status, self.error = "running", None
                for key, rec in self.steps.items():
                    if rec.status == "running":
                        self.steps[key] = replace(rec, interrupted=True)
                    elif e.reason == "retry-run" and rec.status in ("failed", "cancelled"):
                        # An operator's retry: the failed steps start over, full budget.
                        at = e.recorded_at or datetime.min.replace(tzinfo=UTC)
                        self.steps[key] = replace(
                            rec, status="retrying", failures=0, next_attempt_at=at
                        )
                if e.reason == "retry-run":
                    self.parallels = {p: s for p, s in self.parallels.items() if s != "failed"}
            case ev.StepStarted():
                old = self.steps.get(path)
                self.steps[path] = StepRecord(
                    alias=e.step or "",
                    status="running",
                    attempt=e.attempt or 1,
                    failures=old.failures if old else 0,
                    started_at=e.recorded_at,
                )
            case ev.StepCompleted():
                rec = self.steps[path] = replace(
                    self.steps[path], status="completed", interrupted=False
                )
                self.outputs[rec.alias] = self.last_output = e.output
            case ev.StepFailed():
                rec = self._step(path, e)
                self.steps[path] = replace(
                    rec,
                    status="retrying" if e.next_attempt_at is not None else "failed",
                    failures=rec.failures + 1,
                    error=e.error,
                    interrupted=False,
                    next_attempt_at=e.next_attempt_at,
                )
            case ev.StepCancelled():
                rec = self._step(path, e)
                self.steps[path] = replace(
                    rec, status="cancelled", error=e.reason, interrupted=False
                )
            case ev.BranchDecided():
                self.branches[path] = e.arm
            case ev.ParallelStarted():
                self.parallels[path] = "started"
            case ev.ParallelCompleted():
                self.parallels[path] = e.status
            case ev.TimerStarted():
                self.timers[path] = TimerRecord(e.fire_at)
            case ev.TimerFired():
                self.timers[path] = replace(self.timers[path], fired=True)
            case ev.SignalWaiting():
                self.waits[path] = WaitRecord(e.name, e.timeout_at, e.correlation_key)
            case ev.SignalReceived():
                self.signals.append(
                    SignalRecord(e.name, e.payload, e.node_path, e.recorded_at, e.signal_id)
                )
                if e.node_path is not None:
                    out = {"received": True, "payload": e.payload}
                    self.outputs[e.step or e.name] = self.last_output = out
                    self._wait_done(path)
            case ev.SignalTimedOut():
                out = {"received": False, "payload": None}
                self.outputs[e.step or e.name] = self.last_output = out
                self._wait_done(path)
            case ev.RunCompleted():
                self.status, self.result, self.ended_at = "completed", e.result, e.recorded_at
            case ev.RunFailed():
                self.status, self.error, self.ended_at = "failed", e.error, e.recorded_at
            case ev.RunCancelled():
                self.status, self.error, self.ended_at = "cancelled", e.reason, e.recorded_at

    def _wait_done(self, path: str) -> None:
        if (wait := self.waits.get(path)) is not None:
            self.waits[path] = replace(wait, done=True)

    def _step(self, path: str, e: ev.Event) -> StepRecord:
        rec = self.steps.get(path)
        if rec is None:  # failed before it could start (e.g. an unresolvable input)
            rec = self.steps[path] = StepRecord(e.step or "", "running", e.attempt or 1)
        return rec


def fold(events: Iterable[ev.Event], run_id: str = "", state: RunState | None = None) -> RunState:
    """Rebuild (or continue) a run's state from its events."""
    st = state if state is not None else RunState(run_id)
    for e in events:
        st.apply(e)
    return st


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def _adapter(tp: Any) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(tp)
    if adapter is None:
        adapter = _ADAPTERS[tp] = TypeAdapter(tp)
    return adapter


class FlowState:
    """The typed, read-only view of a run that predicates, callables and steps see."""

    __slots__ = ("_definition", "_state", "_typed")

    def __init__(self, state: RunState, definition: FlowDefinition | None = None) -> None:
        self._state = state
        self._definition = definition
        self._typed: dict[tuple[str, Any], Any] = {}

    @property
    def run_id(self) -> str:
        return self._state.run_id

    @property
    def input(self) -> Any:
        return self._state.input

    @property
    def correlation_key(self) -> str | None:
        return self._state.correlation_key

    def has(self, alias: str) -> bool:
        return alias == INPUT_ALIAS or alias in self._state.outputs

    def raw(self, alias: str) -> Any:
        """The JSON form of an output, as recorded in the log."""
        if alias == INPUT_ALIAS:
            return self._state.input
        try:
            return self._state.outputs[alias]
        except KeyError:
            done = ", ".join(sorted(self._state.outputs)) or "none yet"
            raise ReferenceResolutionError(
                f"no output for {alias!r} in run {self.run_id}: that step has not completed "
                f"(completed: {done})"
            ) from None

    @overload
    def get(self, alias: str) -> Any: ...

    @overload
    def get(self, alias: str, model: type[T]) -> T: ...

    def get(self, alias: str, model: Any = None) -> Any:
        """An output rehydrated to ``model`` (default: the node's declared output type)."""
        tp = model
        if tp is None and self._definition is not None:
            tp = self._definition.output_type(alias)
        key = (alias, tp)
        if key not in self._typed:
            raw = self.raw(alias)
            self._typed[key] = raw if tp is None else _adapter(tp).validate_python(raw)
        return self._typed[key]

    def signals(self, name: str | None = None) -> list[SignalRecord]:
        return [s for s in self._state.signals if name is None or s.name == name]
