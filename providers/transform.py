"""Pure local data shaping as nodes: map, filter, pick, render, group_by, sort, unique,
extract. The data (``items``, ``value``, ``values``, ``template``) is bound like any node
input; the shaping itself (a JSON path or a Python callable) is fixed when the flow is
written. Transforms are deterministic, so they run once: a failure is final.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from orchestrator.errors import ReferenceResolutionError
from orchestrator.node import Node, RetryPolicy, StepContext
from orchestrator.refs import Template
from orchestrator.state import FlowState, RunState

from .binding import Bind, provider_node
from .errors import TransformError
from .jsonpath import JsonPath, PathNotFound

__all__ = [
    "extract",
    "filter",
    "group_by",
    "map",
    "pick",
    "render",
    "sort",
    "unique",
]

KeyFn = Callable[[Any], Any] | str
"""A JSON path into each item, or a function of the item."""

_ONCE = RetryPolicy(max_attempts=1)


class ItemsInput(BaseModel):
    items: list[Any]


class ValueInput(BaseModel):
    value: Any


class RenderInput(BaseModel):
    template: str
    values: dict[str, Any]


def _key_fn(key: KeyFn) -> Callable[[Any], Any]:
    if callable(key):
        return key
    path = JsonPath(key)
    return path.find


def _apply(fn: Callable[[Any], Any], item: Any, what: str) -> Any:
    try:
        return fn(item)
    except PathNotFound as exc:
        raise TransformError(f"{what}: {exc}") from None
    except Exception as exc:
        raise TransformError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _identity(item: Any) -> Any:
    return item


def _transform(
    name: str,
    fn: Any,
    input_type: type[BaseModel],
    output_type: Any,
    binding: dict[str, Any],
    timeout: float | None,
) -> Node:
    return provider_node(
        f"transform.{name}", fn, input_type, output_type, binding, retry=_ONCE, timeout=timeout
    )


def map(items: Bind[list[Any]], fn: KeyFn, *, timeout: float | None = None) -> Node:
    """Each item through ``fn`` (a JSON path such as ``"email"`` or a function)."""
    get = _key_fn(fn)

    async def run(ctx: StepContext, inp: ItemsInput) -> list[Any]:
        return [_apply(get, item, "transform.map") for item in inp.items]

    return _transform("map", run, ItemsInput, list[Any], {"items": items}, timeout)


def filter(items: Bind[list[Any]], predicate: KeyFn, *, timeout: float | None = None) -> Node:
    """The items for which ``predicate`` (a JSON path, truthy, or a function) holds."""
    test = _key_fn(predicate)

    def keep(item: Any) -> bool:
        try:
            return bool(test(item))
        except PathNotFound:
            return False

    async def run(ctx: StepContext, inp: ItemsInput) -> list[Any]:
        return [item for item in inp.items if _apply(keep, item, "transform.filter")]

    return _transform("filter", run, ItemsInput, list[Any], {"items": items}, timeout)


def pick(value: Bind[Any], fields: Sequence[str], *, timeout: float | None = None) -> Node:
    """A dict of the given JSON paths of ``value``, keyed by the path as written."""
    paths = [JsonPath(f) for f in fields]

    async def run(ctx: StepContext, inp: ValueInput) -> dict[str, Any]:
        return {p.expr: _apply(p.find, inp.value, "transform.pick") for p in paths}

    return _transform("pick", run, ValueInput, dict[str, Any], {"value": value}, timeout)


def extract(value: Bind[Any], path: str, *, timeout: float | None = None) -> Node:
    """What the JSON ``path`` points at in ``value`` (a list for wildcard paths)."""
    compiled = JsonPath(path)

    async def run(ctx: StepContext, inp: ValueInput) -> Any:
        return _apply(compiled.find, inp.value, "transform.extract")

    return _transform("extract", run, ValueInput, Any, {"value": value}, timeout)


def _render(template: str, values: dict[str, Any]) -> str:
    # The same template language as Template(...) bindings, with ``values`` as the outputs.
    try:
        return Template(template).resolve(FlowState(RunState("", outputs=values)))
    except (ReferenceResolutionError, ValueError) as exc:
        raise TransformError(f"transform.render: {exc}") from None


def render(
    template: Bind[str], values: Bind[dict[str, Any]], *, timeout: float | None = None
) -> Node:
    """``template`` with each ``{name.path[0]}`` replaced from ``values``; ``{{`` is ``{``."""

    async def run(ctx: StepContext, inp: RenderInput) -> str:
        return _render(inp.template, inp.values)

    return _transform(
        "render", run, RenderInput, str, {"template": template, "values": values}, timeout
    )


def group_by(items: Bind[list[Any]], key: KeyFn, *, timeout: float | None = None) -> Node:
    """Items grouped by ``key`` (stringified), groups in first-seen order."""
    get = _key_fn(key)

    async def run(ctx: StepContext, inp: ItemsInput) -> dict[str, list[Any]]:
        groups: dict[str, list[Any]] = {}
        for item in inp.items:
            k = _apply(get, item, "transform.group_by")
            groups.setdefault(k if isinstance(k, str) else json.dumps(k, default=str), []).append(
                item
            )
        return groups

    return _transform("group_by", run, ItemsInput, dict[str, list[Any]], {"items": items}, timeout)


def sort(
    items: Bind[list[Any]],
    key: KeyFn | None = None,
    *,
    reverse: bool = False,
    timeout: float | None = None,
) -> Node:
    """Items sorted by ``key`` (default: the item); items whose key is missing go last."""
    get = _key_fn(key) if key is not None else _identity

    def order(item: Any) -> tuple[bool, Any]:
        try:
            k = get(item)
        except PathNotFound:
            k = None
        return (k is None) != reverse, k

    async def run(ctx: StepContext, inp: ItemsInput) -> list[Any]:
        try:
            return sorted(inp.items, key=order, reverse=reverse)
        except TypeError as exc:
            raise TransformError(f"transform.sort: keys are not comparable: {exc}") from None

    return _transform("sort", run, ItemsInput, list[Any], {"items": items}, timeout)


def unique(
    items: Bind[list[Any]], key: KeyFn | None = None, *, timeout: float | None = None
) -> Node:
    """Items with duplicates (by ``key``, default the whole item) dropped; first one wins."""
    get = _key_fn(key) if key is not None else _identity

    async def run(ctx: StepContext, inp: ItemsInput) -> list[Any]:
        seen: set[str] = set()
        kept = []
        for item in inp.items:
            k = json.dumps(_apply(get, item, "transform.unique"), sort_keys=True, default=str)
            if k not in seen:
                seen.add(k)
                kept.append(item)
        return kept

    return _transform("unique", run, ItemsInput, list[Any], {"items": items}, timeout)
