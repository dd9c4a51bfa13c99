"""Flow definitions: the fluent DSL and the frozen tree it builds.

``Flow("name")...build()`` returns a :class:`FlowDefinition`: an immutable tree of steps
with stable node paths (``"2/b1/0"``: step 0 of branch 1 of the parallel block at top-level
position 2) and a fingerprint of its shape. ``build()`` checks everything it can
statically and names the flow and step in every error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Union

from pydantic import BaseModel

from .errors import FlowDefinitionError
from .node import UNBOUND, Node
from .refs import INPUT_ALIAS, Output, references
from .triggers import ManualTrigger, Trigger

if TYPE_CHECKING:
    from .state import FlowState

__all__ = [
    "Arm",
    "Flow",
    "FlowDefinition",
    "NodeStep",
    "ParallelStep",
    "Step",
    "TimerSpec",
    "TimerStep",
    "WaitSpec",
    "WaitStep",
    "WhenStep",
    "timer",
    "wait_for_signal",
    "walk",
]

Predicate = Callable[["FlowState"], bool]


# --- step specs a user passes to ``then`` ----------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerSpec:
    """A durable timer: the run leaves memory and wakes at the fire time."""

    seconds: float
    alias: str = ""

    def as_(self, alias: str) -> TimerSpec:
        return TimerSpec(self.seconds, alias)


@dataclass(frozen=True, slots=True)
class WaitSpec:
    """Wait for a signal sent to this run: by its id, or by its correlation key (or the
    key ``correlate`` resolves to: a literal, ``Output(...)`` or callable of FlowState)."""

    signal: str
    timeout: float | None = None
    alias: str = ""
    correlate: Any = None

    def as_(self, alias: str) -> WaitSpec:
        return WaitSpec(self.signal, self.timeout, alias, self.correlate)


def _duration(
    delta: timedelta | None, seconds: float, minutes: float, hours: float, what: str
) -> float:
    total = (delta.total_seconds() if delta is not None else 0.0) + seconds
    total += minutes * 60 + hours * 3600
    if total <= 0:
        raise ValueError(f"{what} needs a positive duration")
    return total


def timer(
    delta: timedelta | None = None, *, seconds: float = 0, minutes: float = 0, hours: float = 0
) -> TimerSpec:
    return TimerSpec(_duration(delta, seconds, minutes, hours, "timer()"))


def wait_for_signal(
    name: str, *, timeout: timedelta | float | None = None, correlate: Any = None
) -> WaitSpec:
    secs = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if secs is not None and secs <= 0:
        raise ValueError("wait_for_signal timeout must be positive")
    return WaitSpec(name, secs, correlate=correlate)


# --- the frozen tree ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeStep:
    path: str
    node: Node
    binding: Any  # resolved at build: explicit binding, Output(...) by type, or None

    @property
    def alias(self) -> str:
        return self.node.alias

    kind = "node"


@dataclass(frozen=True, slots=True)
class TimerStep:
    path: str
    alias: str
    seconds: float
    kind = "timer"


@dataclass(frozen=True, slots=True)
class WaitStep:
    path: str
    alias: str
    signal: str
    timeout: float | None
    correlate: Any = None
    kind = "wait"


@dataclass(frozen=True, slots=True)
class Arm:
    predicate: Predicate | None  # None: the ``otherwise`` arm
    label: str
    body: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class WhenStep:
    path: str
    arms: tuple[Arm, ...]
    kind = "when"

    @property
    def alias(self) -> str:
        return f"when@{self.path}"


@dataclass(frozen=True, slots=True)
class ParallelStep:
    path: str
    branches: tuple[tuple[Step, ...], ...]
    kind = "parallel"

    @property
    def alias(self) -> str:
        return f"parallel@{self.path}"


Step = Union[NodeStep, TimerStep, WaitStep, WhenStep, ParallelStep]  # noqa: UP007


def _children(step: Step) -> Iterator[tuple[Step, ...]]:
    if isinstance(step, WhenStep):
        for arm in step.arms:
            yield arm.body
    elif isinstance(step, ParallelStep):
        yield from step.branches


def walk(steps: tuple[Step, ...]) -> Iterator[Step]:
    """Every step of a tree, depth first, in definition order."""
    for step in steps:
        yield step
        for body in _children(step):
            yield from walk(body)


@dataclass(frozen=True)
class FlowDefinition:
    name: str
    triggers: tuple[Trigger, ...]
    steps: tuple[Step, ...]
    task_queue: str | None = None
    index: dict[str, Step] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.index.update({s.path: s for s in walk(self.steps)})

    @cached_property
    def aliases(self) -> dict[str, Step]:
        return {s.alias: s for s in self.index.values()}

    @cached_property
    def fingerprint(self) -> str:
        shape = [
            [s.path, s.kind, s.alias, s.node.name if isinstance(s, NodeStep) else None]
            for s in self.index.values()
        ]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

    def output_type(self, alias: str) -> Any:
        step = self.aliases.get(alias)
        return step.node.output_type if isinstance(step, NodeStep) else None


# --- the builder ---------------------------------------------------------------------------

_Item = Union[Node, TimerSpec, WaitSpec, "_WhenDraft", "_ParallelDraft"]


@dataclass
class _WhenDraft:
    arms: list[tuple[Predicate | None, str, list[_Item]]] = field(default_factory=list)


@dataclass
class _ParallelDraft:
    branches: list[list[_Item]] = field(default_factory=list)


@dataclass
class _Frame:
    kind: str  # "seq" | "when" | "parallel" | "branch"
    items: list[_Item]
    draft: _WhenDraft | _ParallelDraft | None = None


def _label(pred: Callable[..., Any]) -> str:
    return getattr(pred, "__qualname__", None) or repr(pred)


class Flow:
    """Fluent builder. Every method returns ``self``; ``build()`` freezes it."""

    def __init__(self, name: str, *, task_queue: str | None = None) -> None:
        if not name or not name.strip():
            raise ValueError("a flow needs a name")
        self.name = name
        self.task_queue = task_queue
        self._triggers: list[Trigger] = []
        self._stack: list[_Frame] = [_Frame("seq", [])]

    def _error(self, problem: str, step: str | None = None) -> FlowDefinitionError:
        return FlowDefinitionError(self.name, step, problem)

    @property
    def _top(self) -> _Frame:
        return self._stack[-1]

    def _add(self, item: _Item) -> None:
        top = self._top
        if top.kind == "parallel":
            assert isinstance(top.draft, _ParallelDraft)
            top.draft.branches.append([item])
        else:
            top.items.append(item)

    def triggered_by(self, *triggers: Trigger) -> Flow:
        self._triggers.extend(triggers)
        return self

    def then(self, step: Node | TimerSpec | WaitSpec) -> Flow:
        if not isinstance(step, Node | TimerSpec | WaitSpec):
            raise self._error(
                f"then() takes a node, timer() or wait_for_signal(), got {type(step).__name__}"
            )
        self._add(step)
        return self

    def when(self, predicate: Predicate, label: str | None = None) -> Flow:
        if not callable(predicate):
            raise self._error("when() takes a callable of FlowState returning bool")
        draft = _WhenDraft()
        draft.arms.append((predicate, label or _label(predicate), []))
        self._stack.append(_Frame("when", draft.arms[0][2], draft))
        return self

    def else_when(self, predicate: Predicate, label: str | None = None) -> Flow:
        draft = self._when_draft("else_when()")
        if draft.arms[-1][0] is None:
            raise self._error("else_when() after otherwise()")
        draft.arms.append((predicate, label or _label(predicate), []))
        self._top.items = draft.arms[-1][2]
        return self

    def otherwise(self) -> Flow:
        draft = self._when_draft("otherwise()")
        if draft.arms[-1][0] is None:
            raise self._error("otherwise() given twice in one when block")
        draft.arms.append((None, "otherwise", []))
        self._top.items = draft.arms[-1][2]
        return self

    def end_when(self) -> Flow:
        draft = self._when_draft("end_when()")
        self._stack.pop()
        self._add(draft)
        return self

    def _when_draft(self, what: str) -> _WhenDraft:
        top = self._top
        if top.kind != "when" or not isinstance(top.draft, _WhenDraft):
            raise self._error(f"{what} without an open when()")
        return top.draft

    def parallel(self) -> Flow:
        draft = _ParallelDraft()
        self._stack.append(_Frame("parallel", [], draft))
        return self

    def branch(self) -> Flow:
        """Open a sequence branch inside ``parallel()``; close it with ``end_branch()``."""
        if self._top.kind != "parallel":
            raise self._error("branch() outside parallel()")
        self._stack.append(_Frame("branch", []))
        return self

    def end_branch(self) -> Flow:
        if self._top.kind != "branch":
            raise self._error("end_branch() without an open branch()")
        frame = self._stack.pop()
        parent = self._top.draft
        assert isinstance(parent, _ParallelDraft)
        parent.branches.append(frame.items)
        return self

    def end_parallel(self) -> Flow:
        top = self._top
        if top.kind != "parallel" or not isinstance(top.draft, _ParallelDraft):
            raise self._error("end_parallel() without an open parallel()")
        self._stack.pop()
        self._add(top.draft)
        return self

    def build(self) -> FlowDefinition:
        if len(self._stack) > 1:
            open_kinds = ", ".join(f.kind for f in self._stack[1:])
            raise self._error(f"unbalanced blocks: still open: {open_kinds}")
        if not self._stack[0].items:
            raise self._error("a flow needs at least one step")
        builder = _Builder(self.name)
        steps = builder.sequence(self._stack[0].items, "", [])
        triggers = tuple(self._triggers) or (ManualTrigger(),)
        return FlowDefinition(self.name, triggers, steps, self.task_queue)


# Visible aliases, nearest last; each group is one earlier step or block.
_Group = list[tuple[str, Any]]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


class _Builder:
    def __init__(self, flow: str) -> None:
        self.flow = flow
        self.aliases: set[str] = set()

    def error(self, problem: str, step: str | None = None) -> FlowDefinitionError:
        return FlowDefinitionError(self.flow, step, problem)

    def sequence(self, items: list[_Item], prefix: str, visible: list[_Group]) -> tuple[Step, ...]:
        visible = list(visible)
        out: list[Step] = []
        for i, item in enumerate(items):
            path = f"{prefix}{i}"
            step = self.step(item, path, visible)
            out.append(step)
            visible.append([(s.alias, _out_type(s)) for s in walk((step,)) if _named(s)])
        return tuple(out)

    def claim_alias(self, alias: str) -> None:
        if alias == INPUT_ALIAS:
            raise self.error(
                f"the alias {INPUT_ALIAS!r} is reserved for the trigger payload", alias
            )
        if alias in self.aliases:
            raise self.error("duplicate alias; give each step a unique .as_(...)", alias)
        self.aliases.add(alias)

    def step(self, item: _Item, path: str, visible: list[_Group]) -> Step:
        if isinstance(item, Node):
            self.claim_alias(item.alias)
            return NodeStep(path, item, self.bind(item, visible))
        if isinstance(item, TimerSpec):
            alias = item.alias or f"timer@{path}"
            self.claim_alias(alias)
            return TimerStep(path, alias, item.seconds)
        if isinstance(item, WaitSpec):
            alias = item.alias or item.signal
            self.claim_alias(alias)
            return WaitStep(path, alias, item.signal, item.timeout, item.correlate)
        if isinstance(item, _WhenDraft):
            arms = []
            for k, (pred, label, body) in enumerate(item.arms):
                if not body:
                    raise self.error(f"empty arm {label!r} of the when block at {path}")
                tag = "else" if pred is None else f"a{k}"
                arms.append(Arm(pred, label, self.sequence(body, f"{path}/{tag}/", visible)))
            return WhenStep(path, tuple(arms))
        if not item.branches:
            raise self.error(f"empty parallel block at {path}")
        branches = tuple(
            self.sequence(body, f"{path}/b{k}/", visible) for k, body in enumerate(item.branches)
        )
        return ParallelStep(path, branches)

    def bind(self, node: Node, visible: list[_Group]) -> Any:
        if not node.takes_input:
            return None
        known = {alias: tp for group in visible for alias, tp in group}
        if node.binding is not UNBOUND:
            for ref in references(node.binding):
                if ref.alias != INPUT_ALIAS and ref.alias not in known:
                    raise self.error(
                        f"references {ref.expr!r}, but no step aliased {ref.alias!r} can have "
                        "run before this one (later steps and parallel siblings are not visible)",
                        node.alias,
                    )
            ref_type = known.get(node.binding.alias) if isinstance(node.binding, Output) else None
            if (
                isinstance(node.binding, Output)
                and not node.binding.path
                and isinstance(ref_type, type)
                and _is_model(ref_type)
                and _is_model(node.input_type)
                and not issubclass(ref_type, node.input_type)
            ):
                raise self.error(
                    f"input type {node.input_type.__name__} does not accept the output of "
                    f"{node.binding.alias!r} ({ref_type.__name__})",
                    node.alias,
                )
            return node.binding
        if _is_model(node.input_type):
            for group in reversed(visible):
                hits = [a for a, tp in group if _is_model(tp) and issubclass(tp, node.input_type)]
                if len(hits) > 1:
                    raise self.error(
                        f"input type {node.input_type.__name__} is ambiguous: steps "
                        f"{', '.join(sorted(hits))} all produce it; bind one with "
                        ".with_input(Output('alias'))",
                        node.alias,
                    )
                if hits:
                    return Output(hits[0])
        return Output(INPUT_ALIAS)


def _named(step: Step) -> bool:
    return isinstance(step, NodeStep | TimerStep | WaitStep)


def _out_type(step: Step) -> Any:
    return step.node.output_type if isinstance(step, NodeStep) else None
