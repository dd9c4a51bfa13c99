"""A small JSONPath: ``$.a.b[0]``, ``a['odd key']``, ``items[-1]``, ``items[*].name``, ``a.*``.

Paths are compiled when a flow is written, so a typo fails at import, not mid-incident.
A path with a wildcard yields a list of every match; one without yields a single value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["JsonPath", "PathNotFound"]

_TOKEN = re.compile(
    r"\.(?P<name>[A-Za-z_][\w-]*)"
    r"|\.\*(?P<star_dot>)"
    r"|\[(?P<index>-?\d+)\]"
    r"|\[\*\](?P<star>)"
    r"|\[(?P<q>['\"])(?P<quoted>(?:(?!(?P=q)).)*)(?P=q)\]"
)

_WILD = object()  # the step for "*" and "[*]"


class PathNotFound(LookupError):
    """The path does not exist in the value."""


class JsonPath:
    """A compiled path; ``find`` returns what it points at."""

    __slots__ = ("expr", "steps", "wild")

    def __init__(self, expr: str) -> None:
        text = expr.strip()
        text = text[1:] if text.startswith("$") else text
        if text and not text.startswith((".", "[")):
            text = "." + text
        steps: list[Any] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                raise ValueError(f"invalid JSON path {expr!r} at {text[pos:]!r}")
            if m["name"] is not None:
                steps.append(m["name"])
            elif m["index"] is not None:
                steps.append(int(m["index"]))
            elif m["quoted"] is not None:
                steps.append(m["quoted"])
            else:
                steps.append(_WILD)
            pos = m.end()
        self.expr = expr
        self.steps = tuple(steps)
        self.wild = _WILD in self.steps

    def _walk(self, value: Any, steps: tuple[Any, ...]) -> Iterator[Any]:
        if not steps:
            yield value
            return
        step, rest = steps[0], steps[1:]
        if step is _WILD:
            children = list(value.values()) if isinstance(value, Mapping) else value
            for child in children if isinstance(children, list) else []:
                yield from self._walk(child, rest)
        elif isinstance(step, int):
            if isinstance(value, list) and -len(value) <= step < len(value):
                yield from self._walk(value[step], rest)
        elif isinstance(value, Mapping) and step in value:
            yield from self._walk(value[step], rest)

    def find(self, value: Any) -> Any:
        """The match (a list of matches for wildcard paths); ``PathNotFound`` if none."""
        matches = list(self._walk(value, self.steps))
        if self.wild:
            return matches
        if not matches:
            raise PathNotFound(f"{self.expr}: no such path")
        return matches[0]

    def __repr__(self) -> str:
        return f"JsonPath({self.expr!r})"
