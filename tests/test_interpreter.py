"""fold/decide golden sequences, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orchestrator import Flow, FlowMismatchError, FlowState, node, timer, wait_for_signal
from orchestrator import events as ev
from orchestrator.definition import FlowDefinition
from orchestrator.interpreter import Decision, InboxSignal, check_compatible, decide
from orchestrator.state import RunState, fold

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@node("a")
async def a(x: dict[str, Any]) -> int:
    return 1


@node("b")
async def b(x: dict[str, Any]) -> int:
    return 2


calls: list[str] = []


def high(s: FlowState) -> bool:
    calls.append("high")
    return bool(s.get("first") > 0)


def _flow() -> FlowDefinition:
    return (
        Flow("golden")
        .then(a.as_("first"))
        .parallel()
        .then(a.as_("p1"))
        .then(b.as_("p2"))
        .end_parallel()
        .when(high)
        .then(timer(minutes=5).as_("wait"))
        .then(b.as_("last"))
        .end_when()
        .build()
    )


def _started(d: FlowDefinition, input: Any = None) -> RunState:
    return fold(
        [ev.RunStarted(flow=d.name, fingerprint=d.fingerprint, input=input or {}, seq=1)], "r1"
    )


def _types(decision: Decision) -> list[str]:
    return [f"{e.type} {e.step or ''}".strip() for e in decision.events]


def _done(path: str, step: str, output: Any, attempt: int = 1) -> ev.StepCompleted:
    return ev.StepCompleted(node_path=path, step=step, attempt=attempt, output=output)


def test_golden_sequence_through_parallel_when_and_timer() -> None:
    d = _flow()
    st = _started(d)
    first = decide(d, st, T0)
    assert _types(first) == ["step.started first"]
    assert [x.step.alias for x in first.execute] == ["first"]
    assert st.steps == {}  # decide never mutates its input

    st = first.state
    assert st is not None
    st.apply(_done("0", "first", 1))
    second = decide(d, st, T0)
    assert _types(second) == ["parallel.started parallel@1", "step.started p1", "step.started p2"]

    st = second.state
    assert st is not None
    st.apply(_done("1/b0/0", "p1", 1))
    assert _types(decide(d, st, T0)) == []  # p2 still in flight
    st.apply(_done("1/b1/0", "p2", 2))
    third = decide(d, st, T0)
    assert _types(third) == [
        "parallel.completed parallel@1",
        "branch.decided when@2",
        "timer.started wait",
    ]
    assert third.wake_at == T0 + timedelta(minutes=5) and third.execute == []

    st = third.state
    assert st is not None
    calls.clear()
    later = decide(d, st, T0 + timedelta(minutes=5))
    assert calls == []  # the branch decision is reused, never re-evaluated
    assert _types(later) == ["timer.fired wait", "step.started last"]
    st = later.state
    assert st is not None
    st.apply(_done("2/a0/1", "last", 2))
    final = decide(d, st, T0 + timedelta(minutes=6))
    assert _types(final) == ["run.completed"]
    assert final.status == "completed" and final.state and final.state.result == 2


def test_replay_of_the_log_gives_the_same_state_as_live_execution() -> None:
    d = _flow()
    st = _started(d)
    log: list[ev.Event] = [ev.RunStarted(flow=d.name, fingerprint=d.fingerprint, input={}, seq=1)]
    outputs = {"first": 1, "p1": 1, "p2": 2, "last": 2}
    now = T0
    while not st.terminal:
        decision = decide(d, st, now)
        log += decision.events
        assert decision.state is not None
        st = decision.state
        for job in decision.execute:
            done = _done(job.step.path, job.step.alias, outputs[job.step.alias])
            st.apply(done)
            log.append(done)
        now += timedelta(minutes=3)
    replayed = fold(log, "r1")
    assert replayed.outputs == st.outputs and replayed.status == "completed"
    assert replayed.branches == st.branches and replayed.parallels == st.parallels


def test_interrupted_step_is_started_again_as_the_next_attempt() -> None:
    d = _flow()
    st = _started(d)
    st = decide(d, st, T0).state or st
    assert _types(decide(d, st, T0)) == []  # in flight here: nothing to do
    st.apply(ev.RunResumed(reason="recovery"))
    again = decide(d, st, T0)
    assert _types(again) == ["step.started first"]
    assert again.events[0].attempt == 2 and again.execute[0].attempt == 2


def test_retry_waits_for_its_backoff_then_starts_the_next_attempt() -> None:
    d = _flow()
    st = decide(d, _started(d), T0).state
    assert st is not None
    st.apply(
        ev.StepFailed(
            node_path="0",
            step="first",
            attempt=1,
            error="boom",
            error_type="RuntimeError",
            retryable=True,
            next_attempt_at=T0 + timedelta(seconds=2),
        )
    )
    waiting = decide(d, st, T0 + timedelta(seconds=1))
    assert _types(waiting) == [] and waiting.wake_at == T0 + timedelta(seconds=2)
    retry = decide(d, st, T0 + timedelta(seconds=2))
    assert _types(retry) == ["step.started first"] and retry.events[0].attempt == 2
    assert st.steps["0"].failures == 1


def test_parallel_fails_fast_and_records_cancelled_siblings() -> None:
    d = _flow()
    st = decide(d, _started(d), T0).state
    assert st is not None
    st.apply(_done("0", "first", 1))
    st = decide(d, st, T0).state
    assert st is not None
    st.apply(
        ev.StepFailed(
            node_path="1/b1/0", step="p2", attempt=1, error="nope", error_type="X", retryable=False
        )
    )
    failed = decide(d, st, T0)
    assert _types(failed) == ["step.cancelled p1", "parallel.completed parallel@1", "run.failed"]
    completed = failed.events[1]
    assert isinstance(completed, ev.ParallelCompleted) and completed.cancelled == ["1/b0/0"]
    assert failed.state is not None and "p2" in (failed.state.error or "")


def test_unresolvable_input_fails_the_step_with_a_recorded_reason() -> None:
    @node("needs")
    async def needs(v: int) -> int:
        return v

    from orchestrator import Output

    d = Flow("refs").then(needs.as_("n").with_input(Output("input.count"))).build()
    decision = decide(d, _started(d, {"other": 1}), T0)
    assert _types(decision) == ["step.failed n", "run.failed"]
    failed = decision.events[0]
    assert isinstance(failed, ev.StepFailed) and not failed.retryable
    assert "no field 'count'" in failed.error
    bad = decide(d, _started(d, {"count": "many"}), T0)
    assert "input error" in (bad.state.error if bad.state else "")


def test_wait_for_signal_times_out() -> None:
    d = Flow("w").then(wait_for_signal("ack", timeout=60).as_("ack")).build()
    first = decide(d, _started(d), T0)
    assert _types(first) == ["signal.waiting ack"] and first.wake_at == T0 + timedelta(seconds=60)
    assert first.state is not None
    done = decide(d, first.state, T0 + timedelta(seconds=61))
    assert _types(done) == ["signal.timed_out ack", "run.completed"]
    assert done.state is not None and done.state.outputs["ack"] == {
        "received": False,
        "payload": None,
    }


def test_a_signal_sent_before_the_deadline_wins_however_late_it_is_read() -> None:
    d = Flow("w").then(wait_for_signal("ack", timeout=60).as_("ack")).build()
    waiting = decide(d, _started(d), T0).state
    assert waiting is not None
    late = T0 + timedelta(seconds=90)  # the worker comes back after the deadline
    in_time = InboxSignal(1, "ack", {"by": "amy"}, T0 + timedelta(seconds=59), run_id="r1")
    got = decide(d, waiting, late, [in_time])
    assert _types(got) == ["signal.received ack", "run.completed"]
    assert got.state is not None and got.state.outputs["ack"]["payload"] == {"by": "amy"}

    too_late = InboxSignal(2, "ack", {"by": "bob"}, T0 + timedelta(seconds=61), run_id="r1")
    missed = decide(d, waiting, late, [too_late])
    assert _types(missed) == ["signal.timed_out ack", "run.completed"]
    assert missed.state is not None and missed.state.signals == []  # still kept


def test_replay_against_a_changed_flow_stops_with_a_clear_error() -> None:
    d = _flow()
    st = decide(d, _started(d), T0).state
    assert st is not None
    changed = Flow("golden").then(b.as_("zero")).then(a.as_("first")).build()
    with pytest.raises(FlowMismatchError, match=r"run r1: step 'first': node path 0 now holds"):
        check_compatible(changed, st)
    check_compatible(d, st)  # the same flow is fine
