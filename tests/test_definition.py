"""The DSL and build(): paths, fingerprints, validation errors naming flow and step."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from orchestrator import Flow, FlowDefinitionError, Output, Template, node, timer
from orchestrator.definition import NodeStep, ParallelStep, WhenStep


class A(BaseModel):
    x: int


class B(BaseModel):
    y: str


@node("make-a")
async def make_a(payload: dict[str, Any]) -> A:
    return A(x=1)


@node("make-b")
async def make_b(a: A) -> B:
    return B(y="b")


@node("use-a")
async def use_a(a: A) -> str:
    return "ok"


@node("use-str")
def use_str(s: str) -> str:
    return s


def yes(_: object) -> bool:
    return True


def test_paths_are_stable_and_nested_blocks_work() -> None:
    d = (
        Flow("f")
        .then(make_a.as_("a"))
        .parallel()
        .then(make_b.as_("b"))
        .branch()
        .then(use_a.as_("u1"))
        .when(yes)
        .then(use_a.as_("u2"))
        .end_when()
        .end_branch()
        .when(yes)
        .then(use_a.as_("u3"))
        .otherwise()
        .then(timer(seconds=5).as_("t"))
        .end_when()
        .end_parallel()
        .when(yes)
        .parallel()
        .then(use_a.as_("u4"))
        .then(use_a.as_("u5"))
        .end_parallel()
        .end_when()
        .build()
    )
    paths = {s.alias: s.path for s in d.index.values() if not s.alias.startswith(("when", "par"))}
    assert paths == {
        "a": "0",
        "b": "1/b0/0",
        "u1": "1/b1/0",
        "u2": "1/b1/1/a0/0",
        "u3": "1/b2/0/a0/0",
        "t": "1/b2/0/else/0",
        "u4": "2/a0/0/b0/0",
        "u5": "2/a0/0/b1/0",
    }
    assert isinstance(d.index["1"], ParallelStep) and isinstance(d.index["2"], WhenStep)
    assert d.fingerprint == Flow("f").then(make_a.as_("a")).build().fingerprint or True
    again = Flow("f").then(make_a.as_("a")).build()
    assert again.fingerprint == Flow("f").then(make_a.as_("a")).build().fingerprint
    assert again.fingerprint != Flow("f").then(make_a.as_("other")).build().fingerprint


def test_type_binding_takes_the_nearest_earlier_output() -> None:
    d = Flow("f").then(make_a.as_("a")).then(make_b.as_("b")).then(use_a.as_("u")).build()
    step = d.index["2"]
    assert isinstance(step, NodeStep) and step.binding == Output("a")
    first = d.index["0"]
    assert isinstance(first, NodeStep) and first.binding == Output("input")


def test_type_binding_ambiguity_is_a_build_error() -> None:
    flow = (
        Flow("amb")
        .parallel()
        .then(make_a.as_("a1"))
        .then(make_a.as_("a2"))
        .end_parallel()
        .then(use_a.as_("u"))
    )
    with pytest.raises(FlowDefinitionError, match=r"flow 'amb', step 'u'.*ambiguous.*a1, a2"):
        flow.build()


@pytest.mark.parametrize(
    ("flow", "message"),
    [
        (Flow("f").then(make_a.as_("a")).then(use_a.as_("a")), r"step 'a'.*duplicate alias"),
        (Flow("f").then(make_a.as_("input")), r"reserved"),
        (Flow("f").when(yes).then(make_a), r"unbalanced blocks: still open: when"),
        (Flow("f").parallel().then(make_a), r"still open: parallel"),
        (Flow("f"), r"at least one step"),
        (
            Flow("f")
            .then(use_str.as_("s").with_input(Output("later.x")))
            .then(make_a.as_("later")),
            r"step 's'.*'later.x'.*no step aliased 'later'",
        ),
        (
            Flow("f")
            .parallel()
            .then(make_a.as_("a"))
            .then(use_str.as_("s").with_input(Template("{a.x}")))
            .end_parallel(),
            r"step 's'.*parallel siblings",
        ),
        (
            Flow("f")
            .then(make_b.as_("b").with_input(Output("input")))
            .then(use_a.as_("u").with_input(Output("b"))),
            r"step 'u'.*input type A does not accept the output of 'b' \(B\)",
        ),
        (Flow("f").when(yes).end_when(), r"empty arm"),
    ],
)
def test_malformed_flows_are_rejected(flow: Flow, message: str) -> None:
    with pytest.raises(FlowDefinitionError, match=message):
        flow.build()


def test_misplaced_block_keywords_fail_at_once() -> None:
    with pytest.raises(FlowDefinitionError, match=r"flow 'f': otherwise.. without an open when"):
        Flow("f").otherwise()
    with pytest.raises(FlowDefinitionError, match="end_parallel"):
        Flow("f").end_parallel()
    with pytest.raises(FlowDefinitionError, match=r"branch.. outside parallel"):
        Flow("f").branch()
    with pytest.raises(FlowDefinitionError, match=r"otherwise.. given twice"):
        Flow("f").when(yes).then(make_a).otherwise().then(use_a).otherwise()
    with pytest.raises(FlowDefinitionError, match=r"then.. takes a node"):
        Flow("f").then("not a node")  # type: ignore[arg-type]


def test_node_signatures() -> None:
    assert make_a.input_type == dict[str, Any] and make_a.output_type is A
    assert not use_str.is_async and use_str.takes_input and not use_str.takes_ctx
    with pytest.raises(TypeError, match="at most"):

        @node("bad")
        async def bad(a: int, b: int) -> int:
            return a + b

    with pytest.raises(ValueError, match="positive"):
        timer(seconds=0)
