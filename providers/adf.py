"""Atlassian Document Format: the rich-text JSON Jira v3 wants for descriptions/comments.

``to_adf`` reads the markdown-ish text flows produce (diagnostics summaries, webhook
descriptions): blank-line separated paragraphs, ``#`` headings, ``-``/``*`` bullet and
``1.`` numbered lists, fenced code blocks, inline `code`, ``**bold**``, ``[text](url)``
and bare URLs. Anything else stays literal text, so no input produces an invalid doc.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["to_adf", "to_text"]

Node = dict[str, Any]

_FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|\[(?P<label>[^\]]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<bold>[^*]+)\*\*"
    r"|(?P<url>https?://[^\s<>()]+[^\s<>().,;:!?'\"])"
)


def _text(text: str, *marks: Node) -> Node:
    node: Node = {"type": "text", "text": text}
    if marks:
        node["marks"] = list(marks)
    return node


def _inline(line: str) -> list[Node]:
    nodes: list[Node] = []
    pos = 0
    for m in _INLINE.finditer(line):
        if m.start() > pos:
            nodes.append(_text(line[pos : m.start()]))
        if m["code"] is not None:
            nodes.append(_text(m["code"], {"type": "code"}))
        elif m["label"] is not None:
            nodes.append(_text(m["label"], {"type": "link", "attrs": {"href": m["href"]}}))
        elif m["bold"] is not None:
            nodes.append(_text(m["bold"], {"type": "strong"}))
        else:
            nodes.append(_text(m["url"], {"type": "link", "attrs": {"href": m["url"]}}))
        pos = m.end()
    if pos < len(line):
        nodes.append(_text(line[pos:]))
    return nodes


def _paragraph(lines: list[str]) -> Node:
    content: list[Node] = []
    for i, line in enumerate(lines):
        if i:
            content.append({"type": "hardBreak"})
        content.extend(_inline(line))
    return {"type": "paragraph", "content": content} if content else {"type": "paragraph"}


def _list(kind: str, items: list[str]) -> Node:
    return {
        "type": kind,
        "content": [{"type": "listItem", "content": [_paragraph([item])]} for item in items],
    }


def _blocks(lines: list[str]) -> Iterator[Node]:
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif fence := _FENCE.match(line):
            end = next((j for j in range(i + 1, len(lines)) if _FENCE.match(lines[j])), len(lines))
            code = "\n".join(lines[i + 1 : end])
            block: Node = {"type": "codeBlock"}
            if fence[1]:
                block["attrs"] = {"language": fence[1]}
            if code:
                block["content"] = [_text(code)]
            yield block
            i = end + 1
        elif heading := _HEADING.match(line):
            yield {
                "type": "heading",
                "attrs": {"level": len(heading[1])},
                "content": _inline(heading[2].strip()),
            }
            i += 1
        elif _BULLET.match(line) or _NUMBERED.match(line):
            pattern = _BULLET if _BULLET.match(line) else _NUMBERED
            items: list[str] = []
            while i < len(lines) and (m := pattern.match(lines[i])):
                items.append(m[1])
                i += 1
            yield _list("bulletList" if pattern is _BULLET else "orderedList", items)
        else:
            start = i
            while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
                i += 1
            yield _paragraph([ln.rstrip() for ln in lines[start:i]])


def _starts_block(line: str) -> bool:
    return any(p.match(line) for p in (_FENCE, _HEADING, _BULLET, _NUMBERED))


def to_adf(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """An ADF ``doc`` for ``value``: markdown-ish text, or an ADF doc passed through."""
    if isinstance(value, Mapping):
        if value.get("type") != "doc":
            raise ValueError("an ADF document must have type 'doc'")
        return dict(value)
    content = list(_blocks(value.replace("\r\n", "\n").split("\n")))
    return {"type": "doc", "version": 1, "content": content or [{"type": "paragraph"}]}


def to_text(doc: Any) -> str:
    """The plain text of an ADF document (blocks on their own lines)."""
    if isinstance(doc, str) or doc is None:
        return doc or ""
    if not isinstance(doc, Mapping):
        return ""
    kind = doc.get("type")
    if kind == "text":
        return str(doc.get("text", ""))
    if kind == "hardBreak":
        return "\n"
    parts = [to_text(child) for child in doc.get("content") or []]
    if kind in ("doc", "bulletList", "orderedList", "listItem"):
        return "\n".join(p for p in parts if p)
    return "".join(parts)
