"""Just enough JQL for the Jira fake: ``AND``-joined clauses and ``ORDER BY``.

Clauses: ``field = value``, ``!=``, ``~`` (contains text), ``in (a, b)``, ``not in (...)``,
``is EMPTY`` / ``is not EMPTY``. Fields: project, key, labels, status, issuetype,
priority, assignee, resolution, summary, text. Anything else is a JQL error, as Jira
would report it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

__all__ = ["JqlError", "compile_jql"]

_TOKEN = re.compile(
    r"\s*(?:\"(?P<dq>(?:[^\"\\]|\\.)*)\"|'(?P<sq>(?:[^'\\]|\\.)*)'"
    r"|(?P<op>!=|!~|=|~|\(|\)|,)|(?P<word>[\w.@+-]+))"
)

Issue = dict[str, Any]
Predicate = Callable[[Issue], bool]


class JqlError(ValueError):
    """The query is not JQL this fake understands."""


def _tokens(jql: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(jql.rstrip()):
        m = _TOKEN.match(jql, pos)
        if m is None:
            raise JqlError(f"Error in the JQL Query: unexpected {jql[pos : pos + 10]!r}")
        if m["dq"] is not None or m["sq"] is not None:
            raw = m["dq"] if m["dq"] is not None else m["sq"]
            out.append(("str", re.sub(r"\\(.)", r"\1", raw)))
        elif m["op"]:
            out.append(("op", m["op"]))
        else:
            out.append(("word", m["word"]))
        pos = m.end()
    return out


def _values(issue: Issue, field: str) -> list[str]:
    """The comparable values of ``field`` (lower-cased)."""
    f = issue["fields"]

    def name(obj: Any, *keys: str) -> list[str]:
        return [str(obj[k]).lower() for k in keys if isinstance(obj, dict) and obj.get(k)]

    match field:
        case "project":
            return name(f.get("project"), "key", "id")
        case "key" | "issuekey":
            return [issue["key"].lower(), str(issue["id"])]
        case "labels":
            return [str(label).lower() for label in f.get("labels") or []]
        case "status":
            return name(f.get("status"), "name", "id")
        case "issuetype" | "type":
            return name(f.get("issuetype"), "name", "id")
        case "priority":
            return name(f.get("priority"), "name", "id")
        case "assignee":
            return name(f.get("assignee"), "accountId", "emailAddress")
        case "resolution":
            return name(f.get("resolution"), "name", "id")
        case "summary" | "text":
            return [str(f.get("summary", "")).lower()]
    raise JqlError(f"Error in the JQL Query: field '{field}' is not supported by the sandbox")


def _clause(field: str, op: str, operand: list[str] | None) -> Predicate:
    if op in ("is", "is not"):
        return lambda i: (not _values(i, field)) == (op == "is")
    assert operand is not None
    wanted = [v.lower() for v in operand]
    if op in ("~", "!~"):
        return lambda i: any(w in v for v in _values(i, field) for w in wanted) == (op == "~")
    positive = op in ("=", "in")
    return lambda i: bool(set(_values(i, field)) & set(wanted)) == positive


def compile_jql(jql: str) -> tuple[Predicate, list[tuple[str, bool]]]:
    """A predicate over issues and the ``ORDER BY`` keys ``(field, descending)``."""
    toks = _tokens(jql)
    clauses: list[Predicate] = []
    order: list[tuple[str, bool]] = []
    i = 0

    def take() -> tuple[str, str]:
        nonlocal i
        if i >= len(toks):
            raise JqlError("Error in the JQL Query: the query ends too early")
        i += 1
        return toks[i - 1]

    def peek_word(*words: str) -> bool:
        return i < len(toks) and toks[i][0] == "word" and toks[i][1].lower() in words

    while i < len(toks):
        if peek_word("order"):
            take()
            if not peek_word("by"):
                raise JqlError("Error in the JQL Query: expected BY after ORDER")
            take()
            while i < len(toks):
                field = take()[1].lower()
                desc = False
                if peek_word("asc", "desc"):
                    desc = take()[1].lower() == "desc"
                order.append((field, desc))
                if i < len(toks) and toks[i] == ("op", ","):
                    take()
            break
        field = take()[1].lower()
        _values({"key": "", "id": "", "fields": {}}, field)  # rejects unknown fields early
        kind, op = take()
        operand: list[str] | None
        if kind == "word" and op.lower() in ("in", "not", "is"):
            op = op.lower()
            if op == "not" or (op == "is" and peek_word("not")):
                op = f"{op} {take()[1].lower()}"
            if op in ("is", "is not"):
                if not peek_word("empty", "null"):
                    raise JqlError("Error in the JQL Query: IS takes EMPTY or NULL")
                take()
                operand = None
            else:
                if op not in ("in", "not in") or take() != ("op", "("):
                    raise JqlError(f"Error in the JQL Query: expected '(' after {op.upper()}")
                operand = []
                while (tok := take()) != ("op", ")"):
                    if tok != ("op", ","):
                        operand.append(tok[1])
        elif kind == "op" and op in ("=", "!=", "~", "!~"):
            operand = [take()[1]]
        else:
            raise JqlError(f"Error in the JQL Query: unexpected {op!r} after '{field}'")
        clauses.append(_clause(field, op, operand))
        if i < len(toks) and not peek_word("order"):
            if not peek_word("and"):
                raise JqlError("Error in the JQL Query: the sandbox supports AND only")
            take()
    return (lambda issue: all(c(issue) for c in clauses)), order
