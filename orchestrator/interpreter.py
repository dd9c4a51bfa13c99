"""``decide(definition, state, now) -> Decision``: what a run does next. Pure.

One pass walks the definition against the state, emitting the events that record each
decision (branch taken, timer started or fired, step started, siblings cancelled, run
completed or failed) and applying them to a scratch copy as it goes, so a single pass
reaches the next point where the run must wait for a step, a timer or a signal.
The same function serves a fresh run, a resumed run and ``resolute replay``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pydantic import ValidationError

from . import events as ev
from .definition import (
    FlowDefinition,
    NodeStep,
    ParallelStep,
    Step,
    TimerStep,
    WaitStep,
    WhenStep,
    walk,
)
from .errors import FlowMismatchError, ReferenceResolutionError
from .redaction import redact
from .refs import Output, resolve
from .state import FlowState, RunState

__all__ = ["Decision", "Execute", "InboxSignal", "check_compatible", "decide"]


@dataclass(frozen=True, slots=True)
class InboxSignal:
    """A signal kept for this run (by id or correlation key), not yet consumed."""

    id: int
    name: str
    payload: Any
    sent_at: datetime | None = None
    run_id: str | None = None
    correlation_key: str | None = None


@dataclass(frozen=True, slots=True)
class Execute:
    """Run this node now: ``value`` is its validated input (never written anywhere)."""

    step: NodeStep
    attempt: int
    value: Any


@dataclass(slots=True)
class Decision:
    events: list[ev.Event] = field(default_factory=list)
    execute: list[Execute] = field(default_factory=list)
    wake_at: datetime | None = None  # earliest timer, retry or signal timeout
    state: RunState | None = None  # the state with ``events`` applied

    @property
    def status(self) -> str:
        assert self.state is not None
        return self.state.status


class _S(Enum):
    DONE = 1
    BLOCKED = 2
    FAILED = 3


class _Pass:
    def __init__(
        self,
        definition: FlowDefinition,
        state: RunState,
        now: datetime,
        inbox: Sequence[InboxSignal],
    ) -> None:
        self.definition = definition
        self.state = state
        self.now = now
        self.inbox = inbox
        self.out = Decision(state=state)
        self.view = FlowState(state, definition)
        self.failure: str | None = None

    def emit(self, e: ev.Event) -> None:
        self.out.events.append(e)
        self.state.apply(e)

    def wake(self, at: datetime | None) -> None:
        if at is not None and (self.out.wake_at is None or at < self.out.wake_at):
            self.out.wake_at = at

    def fail(self, message: str) -> _S:
        if self.failure is None:
            self.failure = message
        return _S.FAILED

    def sequence(self, steps: tuple[Step, ...]) -> _S:
        for step in steps:
            status = self.step(step)
            if status is not _S.DONE:
                return status
        return _S.DONE

    def step(self, step: Step) -> _S:
        if isinstance(step, NodeStep):
            return self.node(step)
        if isinstance(step, TimerStep):
            return self.timer(step)
        if isinstance(step, WaitStep):
            return self.wait(step)
        if isinstance(step, WhenStep):
            return self.when(step)
        return self.parallel(step)

    def node(self, step: NodeStep) -> _S:
        rec = self.state.steps.get(step.path)
        if rec is None:
            return self.start(step, 1)
        if rec.status == "completed":
            return _S.DONE
        if rec.status == "running":
            return self.start(step, rec.attempt + 1) if rec.interrupted else _S.BLOCKED
        if rec.status == "retrying":
            assert rec.next_attempt_at is not None
            if rec.next_attempt_at <= self.now:
                return self.start(step, rec.attempt + 1)
            self.wake(rec.next_attempt_at)
            return _S.BLOCKED
        return self.fail(f"step {step.alias!r} {rec.status}: {rec.error}")

    def start(self, step: NodeStep, attempt: int) -> _S:
        node = step.node
        common = {"node_path": step.path, "step": step.alias, "attempt": attempt}
        try:
            value = node.input_adapter.validate_python(resolve(step.binding, self.view))
        except (ReferenceResolutionError, ValidationError) as exc:
            kind = "input" if isinstance(exc, ValidationError) else "reference"
            error = f"cannot build the input of step {step.alias!r} ({kind} error): {exc}"
            self.emit(
                ev.StepFailed(**common, error=error, error_type=type(exc).__name__, retryable=False)
            )
            return self.fail(error)
        binding = step.binding
        if isinstance(binding, Output) and not binding.path:
            # The input is an earlier output (or the trigger payload) as the log already
            # holds it: name it instead of copying it into every step that takes it.
            started = ev.StepStarted(**common, node=node.name, input_ref=binding.alias)
        else:
            shown = node.input_adapter.dump_python(value, mode="json") if node.takes_input else None
            started = ev.StepStarted(**common, node=node.name, input=redact(shown))
        self.emit(started)
        self.out.execute.append(Execute(step, attempt, value))
        return _S.BLOCKED

    def timer(self, step: TimerStep) -> _S:
        rec = self.state.timers.get(step.path)
        if rec is None:
            fire_at = self.now + timedelta(seconds=step.seconds)
            self.emit(ev.TimerStarted(node_path=step.path, step=step.alias, fire_at=fire_at))
            rec = self.state.timers[step.path]
        if rec.fired:
            return _S.DONE
        if rec.fire_at <= self.now:
            self.emit(ev.TimerFired(node_path=step.path, step=step.alias))
            return _S.DONE
        self.wake(rec.fire_at)
        return _S.BLOCKED

    def wait(self, step: WaitStep) -> _S:
        if step.alias in self.state.outputs:
            return _S.DONE
        if step.path not in self.state.waits:
            timeout_at = (
                self.now + timedelta(seconds=step.timeout) if step.timeout is not None else None
            )
            try:
                key = resolve(step.correlate, self.view)
            except ReferenceResolutionError as exc:
                return self.fail(f"wait {step.alias!r}: cannot resolve its correlation key: {exc}")
            self.emit(
                ev.SignalWaiting(
                    node_path=step.path,
                    step=step.alias,
                    name=step.signal,
                    timeout_at=timeout_at,
                    correlation_key=None if key is None else str(key),
                )
            )
        wait = self.state.waits[step.path]
        key = wait.correlation_key or self.state.correlation_key
        consumed = {s.signal_id for s in self.state.signals}
        timeout_at = wait.timeout_at
        for sig in self.inbox:
            if (
                sig.name == step.signal
                and sig.id not in consumed
                and (sig.run_id == self.state.run_id or (key and sig.correlation_key == key))
                # Sent in time, however late a worker gets to it; a later one stays kept.
                and (timeout_at is None or sig.sent_at is None or sig.sent_at <= timeout_at)
            ):
                self.emit(
                    ev.SignalReceived(
                        node_path=step.path,
                        step=step.alias,
                        name=sig.name,
                        payload=sig.payload,
                        signal_id=sig.id,
                    )
                )
                return _S.DONE
        if timeout_at is not None and timeout_at <= self.now:
            self.emit(ev.SignalTimedOut(node_path=step.path, step=step.alias, name=step.signal))
            return _S.DONE
        self.wake(timeout_at)
        return _S.BLOCKED

    def when(self, step: WhenStep) -> _S:
        arm = self.state.branches.get(step.path)
        if arm is None:
            arm, label = -1, "no arm matched"
            for k, candidate in enumerate(step.arms):
                try:
                    taken = candidate.predicate is None or bool(candidate.predicate(self.view))
                except Exception as exc:
                    return self.fail(
                        f"when block at {step.path}: predicate {candidate.label} raised "
                        f"{type(exc).__name__}: {exc}"
                    )
                if taken:
                    arm, label = k, candidate.label
                    break
            self.emit(ev.BranchDecided(node_path=step.path, step=step.alias, arm=arm, label=label))
        return _S.DONE if arm < 0 else self.sequence(step.arms[arm].body)

    def parallel(self, step: ParallelStep) -> _S:
        status = self.state.parallels.get(step.path)
        if status == "completed":
            return _S.DONE
        if status == "failed":
            return self.fail(f"parallel block at {step.path} failed")
        if status is None:
            self.emit(
                ev.ParallelStarted(
                    node_path=step.path, step=step.alias, branches=len(step.branches)
                )
            )
        results = [self.sequence(branch) for branch in step.branches]
        if _S.FAILED in results:
            cancelled = self.cancel_all(step)
            self.emit(
                ev.ParallelCompleted(
                    node_path=step.path, step=step.alias, status="failed", cancelled=cancelled
                )
            )
            return _S.FAILED
        if all(r is _S.DONE for r in results):
            self.emit(
                ev.ParallelCompleted(node_path=step.path, step=step.alias, status="completed")
            )
            return _S.DONE
        return _S.BLOCKED

    def cancel_all(self, block: ParallelStep) -> list[str]:
        """Fail fast: cancel every sibling step still running or waiting to retry."""
        cancelled = []
        for branch in block.branches:
            for s in _nodes(branch):
                rec = self.state.steps.get(s.path)
                if rec is not None and rec.status in ("running", "retrying"):
                    self.emit(
                        ev.StepCancelled(
                            node_path=s.path,
                            step=s.alias,
                            attempt=rec.attempt,
                            reason=f"a sibling in the parallel block at {block.path} failed",
                        )
                    )
                    cancelled.append(s.path)
        self.out.execute = [x for x in self.out.execute if x.step.path not in cancelled]
        return cancelled


def _nodes(steps: tuple[Step, ...]) -> list[NodeStep]:
    return [s for s in walk(steps) if isinstance(s, NodeStep)]


def decide(
    definition: FlowDefinition,
    state: RunState,
    now: datetime,
    inbox: Sequence[InboxSignal] = (),
) -> Decision:
    """The events to append and the steps to run next. ``state`` is not modified.

    ``inbox`` holds the signals kept for this run that its waits may consume.
    """
    if state.terminal:
        return Decision(state=state)
    p = _Pass(definition, state.copy(), now, inbox)
    status = p.sequence(definition.steps)
    if status is _S.DONE:
        p.emit(ev.RunCompleted(result=p.state.last_output))
    elif status is _S.FAILED:
        p.out.execute.clear()
        p.emit(ev.RunFailed(error=p.failure or "run failed"))
    return p.out


def check_compatible(definition: FlowDefinition, state: RunState) -> None:
    """Refuse to replay a log whose recorded steps no longer exist at the same paths."""
    if state.fingerprint == definition.fingerprint:
        return
    recorded: list[tuple[str, str | None]] = [(p, rec.alias) for p, rec in state.steps.items()]
    recorded += [(path, None) for path in (*state.branches, *state.parallels, *state.timers)]
    for path, alias in recorded:
        step = definition.index.get(path)
        if step is None:
            raise FlowMismatchError(state.run_id, alias or path, f"node path {path} is gone")
        if alias is not None and step.alias != alias:
            raise FlowMismatchError(
                state.run_id, alias, f"node path {path} now holds step {step.alias!r}"
            )
