"""Local transforms and the JSON path they use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.errors import NonRetryableError
from orchestrator.node import StepContext
from orchestrator.refs import Output
from providers import transform
from providers.errors import TransformError
from providers.jsonpath import JsonPath, PathNotFound

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]

ONCALL = [
    {"name": "Alice", "email": "alice@example.com", "level": 1, "team": {"name": "checkout"}},
    {"name": "Bob", "email": "bob@example.com", "level": 2, "team": {"name": "payments"}},
    {"name": "Cleo", "email": "cleo@example.com", "level": 1, "team": {"name": "checkout"}},
    {"name": "Alice", "email": "alice@example.com", "level": 3},
]


@pytest.fixture
def ctx(make_ctx: MakeContext) -> StepContext:
    return make_ctx(outputs={"oncall": ONCALL, "ticket": {"key": "OPS-7", "url": "u"}})


def test_json_paths() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": 2}], "odd key": True}}
    assert JsonPath("$.a.b[0].c").find(doc) == 1
    assert JsonPath("a.b[-1].c").find(doc) == 2
    assert JsonPath("a['odd key']").find(doc) is True
    assert JsonPath("a.b[*].c").find(doc) == [1, 2]
    assert JsonPath("$.a.*").find({"a": {"x": 1, "y": 2}}) == [1, 2]
    assert JsonPath("$").find(doc) == doc
    assert JsonPath("a.missing[*]").find(doc) == []
    with pytest.raises(PathNotFound):
        JsonPath("a.b[5]").find(doc)
    with pytest.raises(ValueError, match="invalid JSON path"):
        JsonPath("a..b")


async def test_map_filter_pick_extract(run: Run, ctx: StepContext) -> None:
    assert await run(transform.map(Output("oncall"), "email"), ctx) == [
        "alice@example.com",
        "bob@example.com",
        "cleo@example.com",
        "alice@example.com",
    ]
    assert await run(transform.map(Output("oncall"), lambda o: o["level"] * 10), ctx) == [
        10,
        20,
        10,
        30,
    ]
    names = await run(transform.filter(Output("oncall"), lambda o: o["level"] == 1), ctx)
    assert [o["name"] for o in names] == ["Alice", "Cleo"]
    with_team = await run(transform.filter(Output("oncall"), "team.name"), ctx)
    assert len(with_team) == 3
    assert await run(transform.pick(Output("ticket"), ["key", "url"]), ctx) == {
        "key": "OPS-7",
        "url": "u",
    }
    assert await run(transform.extract(Output("oncall"), "$[*].team.name"), ctx) == [
        "checkout",
        "payments",
        "checkout",
    ]


async def test_group_sort_unique(run: Run, ctx: StepContext) -> None:
    groups = await run(transform.group_by(Output("oncall"), "level"), ctx)
    assert {k: [o["name"] for o in v] for k, v in groups.items()} == {
        "1": ["Alice", "Cleo"],
        "2": ["Bob"],
        "3": ["Alice"],
    }
    ordered = await run(transform.sort(Output("oncall"), "team.name", reverse=True), ctx)
    assert [o["name"] for o in ordered] == ["Bob", "Alice", "Cleo", "Alice"]  # missing key last
    assert await run(transform.sort([3, 1, 2]), ctx) == [1, 2, 3]
    unique = await run(transform.unique(Output("oncall"), "email"), ctx)
    assert [o["name"] for o in unique] == ["Alice", "Bob", "Cleo"]
    assert await run(transform.unique([{"a": 1}, {"a": 1}, {"a": 2}]), ctx) == [{"a": 1}, {"a": 2}]


async def test_render(run: Run, ctx: StepContext) -> None:
    text = await run(
        transform.render(
            "{ticket.key}: paged {people[0].name} (level {people[0].level}) {{literal}}",
            {"ticket": Output("ticket"), "people": Output("oncall")},
        ),
        ctx,
    )
    assert text == "OPS-7: paged Alice (level 1) {literal}"
    with pytest.raises(TransformError, match="no field 'nope'"):
        await run(transform.render("{ticket.nope}", {"ticket": Output("ticket")}), ctx)


async def test_failures_are_final(run: Run, ctx: StepContext) -> None:
    with pytest.raises(TransformError, match=r"transform\.map: .*no such path") as err:
        await run(transform.map(Output("oncall"), "team.name"), ctx)
    assert isinstance(err.value, NonRetryableError)
    with pytest.raises(TransformError, match="ZeroDivisionError"):
        await run(transform.map([1], lambda x: x / 0), ctx)
    with pytest.raises(TransformError, match="not comparable"):
        await run(transform.sort([1, "a"]), ctx)
    assert transform.map([1], "x").retry.max_attempts == 1
