"""Data references between steps: ``Output("alias.path[0]")``, templates, callables.

References are parsed when the flow is written (syntax errors surface at import) and
resolved against the run's recorded outputs when a step starts. Resolution never
substitutes a placeholder: a missing alias or path fails the step with a clear error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ReferenceResolutionError

if TYPE_CHECKING:
    from .state import FlowState

__all__ = ["INPUT_ALIAS", "Output", "Template", "references", "resolve"]

INPUT_ALIAS = "input"

_SEGMENT = re.compile(r"([A-Za-z_][\w-]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")

PathPart = str | int


def _parse_path(expr: str) -> tuple[str, tuple[PathPart, ...]]:
    """Split ``alias.a.b[0].c`` into ``("alias", ("a", "b", 0, "c"))``."""
    if not expr or expr != expr.strip():
        raise ValueError(f"invalid reference {expr!r}: expected 'alias.path[0].field'")
    parts: list[PathPart] = []
    for raw in expr.split("."):
        m = _SEGMENT.fullmatch(raw)
        if m is None:
            raise ValueError(
                f"invalid reference {expr!r}: segment {raw!r} is not a name with "
                "optional [index] suffixes"
            )
        parts.append(m.group(1))
        parts.extend(int(i) for i in _INDEX.findall(m.group(2)))
    alias, *rest = parts
    return str(alias), tuple(rest)


def _walk(value: Any, path: tuple[PathPart, ...], expr: str) -> Any:
    for depth, key in enumerate(path):
        here = ".".join(str(p) for p in path[:depth]) or "<root>"
        if isinstance(key, int):
            if not isinstance(value, list):
                raise ReferenceResolutionError(
                    f"{expr}: cannot index [{key}] into {type(value).__name__} at {here}"
                )
            if key >= len(value):
                raise ReferenceResolutionError(
                    f"{expr}: index [{key}] out of range (length {len(value)}) at {here}"
                )
            value = value[key]
        else:
            if not isinstance(value, Mapping):
                raise ReferenceResolutionError(
                    f"{expr}: cannot read field {key!r} of {type(value).__name__} at {here}"
                )
            if key not in value:
                known = ", ".join(sorted(map(str, value))) or "none"
                raise ReferenceResolutionError(
                    f"{expr}: no field {key!r} at {here} (fields: {known})"
                )
            value = value[key]
    return value


@dataclass(frozen=True, slots=True)
class Output:
    """The recorded output of an earlier step (or ``input``), optionally a deep path."""

    expr: str
    alias: str
    path: tuple[PathPart, ...]

    def __init__(self, expr: str) -> None:
        alias, path = _parse_path(expr)
        object.__setattr__(self, "expr", expr)
        object.__setattr__(self, "alias", alias)
        object.__setattr__(self, "path", path)

    def resolve(self, state: FlowState) -> Any:
        return _walk(state.raw(self.alias), self.path, self.expr)

    def __repr__(self) -> str:
        return f"Output({self.expr!r})"


@dataclass(frozen=True, slots=True)
class Template:
    """A string mixing literals and references: ``Template("{ticket.key}: {event.title}")``.

    ``{{`` and ``}}`` stand for literal braces.
    """

    text: str
    refs: tuple[Output, ...]

    def __init__(self, text: str) -> None:
        escaped = text.replace("{{", "").replace("}}", "")
        refs = tuple(Output(m.group(1).strip()) for m in _PLACEHOLDER.finditer(escaped))
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "refs", refs)

    def resolve(self, state: FlowState) -> str:
        def sub(m: re.Match[str]) -> str:
            value = Output(m.group(1).strip()).resolve(state)
            return value if isinstance(value, str) else _render(value)

        parts = self.text.split("{{")
        rendered = [
            "}".join(_PLACEHOLDER.sub(sub, chunk) for chunk in part.split("}}")) for part in parts
        ]
        return "{".join(rendered)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"


def _render(value: Any) -> str:
    import json

    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def resolve(value: Any, state: FlowState) -> Any:
    """Resolve a binding (literal, reference, template, callable, or containers of them)."""
    if isinstance(value, Output | Template):
        return value.resolve(state)
    if isinstance(value, dict):
        return {k: resolve(v, state) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve(v, state) for v in value]
    if callable(value) and not isinstance(value, type):
        fn: Callable[[FlowState], Any] = value
        try:
            return fn(state)
        except ReferenceResolutionError:
            raise
        except Exception as exc:
            name = getattr(fn, "__qualname__", repr(fn))
            raise ReferenceResolutionError(
                f"input callable {name} raised {type(exc).__name__}: {exc}"
            ) from exc
    return value


def references(value: Any) -> Iterator[Output]:
    """Every ``Output`` a binding mentions, for build-time validation."""
    if isinstance(value, Output):
        yield value
    elif isinstance(value, Template):
        yield from value.refs
    elif isinstance(value, dict):
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from references(v)
