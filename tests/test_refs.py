"""Data references: paths, indexes, templates, callables; clear errors, no placeholders."""

from __future__ import annotations

import pytest

from orchestrator import FlowState, Output, ReferenceResolutionError, Template
from orchestrator.refs import resolve
from orchestrator.state import RunState


def _state() -> FlowState:
    st = RunState("r1", input={"incident": {"id": "P1"}})
    st.outputs["event"] = {"title": "DB down", "data": {"assignees": [{"id": "U1"}, {"id": "U2"}]}}
    st.outputs["n"] = 3
    return FlowState(st)


def test_deep_paths_and_indexes() -> None:
    s = _state()
    assert Output("event.data.assignees[1].id").resolve(s) == "U2"
    assert Output("input.incident.id").resolve(s) == "P1"
    assert Output("event").resolve(s)["title"] == "DB down"


def test_templates_mix_literals_and_references() -> None:
    s = _state()
    assert Template("{event.title} ({n} checks) {{literal}}").resolve(s) == (
        "DB down (3 checks) {literal}"
    )


def test_containers_and_callables_resolve_recursively() -> None:
    s = _state()
    value = {"a": [Output("n"), "lit"], "b": lambda st: st.get("n") * 2}
    assert resolve(value, s) == {"a": [3, "lit"], "b": 6}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (Output("missing.x"), r"no output for 'missing'.*completed: event, n"),
        (Output("event.nope"), r"no field 'nope' at <root> \(fields: data, title\)"),
        (Output("event.data.assignees[5]"), r"index \[5\] out of range \(length 2\)"),
        (Output("event.title[0]"), r"cannot index \[0\] into str"),
        (Template("x {event.nope}"), r"no field 'nope'"),
    ],
)
def test_unresolvable_references_fail_clearly(ref: object, message: str) -> None:
    with pytest.raises(ReferenceResolutionError, match=message):
        resolve(ref, _state())


def test_callable_errors_name_the_callable() -> None:
    def boom(_: FlowState) -> None:
        raise KeyError("k")

    with pytest.raises(ReferenceResolutionError, match="boom raised KeyError"):
        resolve(boom, _state())


@pytest.mark.parametrize("bad", ["", "a..b", "a.b[x]", " a", "a.[0]", "1abc"])
def test_syntax_errors_surface_when_the_flow_is_written(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid reference"):
        Output(bad)
