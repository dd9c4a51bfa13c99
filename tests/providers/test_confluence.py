"""Confluence nodes against the sandbox, including the idempotent create."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from orchestrator.node import StepContext
from providers import confluence
from providers.confluence import ConfluenceProvider
from providers.errors import NotFoundError, VendorRequestError, VendorUnavailableError
from providers.sandbox import Sandbox

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]

BODY = "<h1>Postmortem</h1><p>The pool ran dry.</p>"


async def test_create_page_once_and_find_it(
    run: Run, make_ctx: MakeContext, confluence_provider: ConfluenceProvider, sandbox: Sandbox
) -> None:
    node = confluence.create_page(
        space_key="OPS",
        title="Postmortem: PFQZPSY",
        body=BODY,
        parent_id="65539",
        labels=["postmortem", "incident"],
    )
    page = await run(node, make_ctx(confluence_provider))
    assert page.url and page.url.endswith(f"/wiki/spaces/OPS/pages/{page.id}/Postmortem%3A+PFQZPSY")
    again = await run(node, make_ctx(confluence_provider))  # a re-run after a crash
    assert again.id == page.id
    stored = sandbox.state()["confluence"]
    assert [p["title"] for p in stored["pages"].values()].count("Postmortem: PFQZPSY") == 1
    assert stored["pages"][page.id]["body"]["storage"]["value"] == BODY
    assert stored["pages"][page.id]["parentId"] == "65539"
    assert stored["labels"][page.id] == ["postmortem", "incident"]

    found = await run(
        confluence.find_page(space_key="OPS", title="Postmortem: PFQZPSY"),
        make_ctx(confluence_provider),
    )
    assert found is not None and found.id == page.id
    missing = await run(
        confluence.find_page(space_key="OPS", title="No such page"), make_ctx(confluence_provider)
    )
    assert missing is None


async def test_lost_answers_are_recovered_by_the_lookup(
    run: Run, make_ctx: MakeContext, confluence_provider: ConfluenceProvider, sandbox: Sandbox
) -> None:
    node = confluence.create_page(space_key="OPS", title="Timeline: PQ1K5C8", body="<p>t</p>")
    sandbox.inject("confluence", "/wiki/api/v2/pages", method="POST", disconnect="after")
    with pytest.raises(VendorUnavailableError):
        await run(node, make_ctx(confluence_provider))
    page = await run(node, make_ctx(confluence_provider))
    titles = [p["title"] for p in sandbox.state()["confluence"]["pages"].values()]
    assert titles.count("Timeline: PQ1K5C8") == 1 and page.title == "Timeline: PQ1K5C8"


async def test_failures(
    run: Run,
    make_ctx: MakeContext,
    confluence_provider: ConfluenceProvider,
    sandbox: Sandbox,
    sandbox_env: dict[str, str],
) -> None:
    with pytest.raises(NotFoundError, match="no space with key 'NOPE'"):
        await run(confluence.find_page(space_key="NOPE", title="x"), make_ctx(confluence_provider))
    with pytest.raises(VendorRequestError, match="No parent page"):
        await run(
            confluence.create_page(space_key="OPS", title="Orphan", body="<p/>", parent_id="1"),
            make_ctx(confluence_provider),
        )
    sandbox.inject("confluence", "/wiki/api/v2/spaces", 429, retry_after=0)
    sandbox.inject("confluence", "/wiki/api/v2/pages", 502, method="GET")
    assert await run(
        confluence.find_page(space_key="OPS", title="Operations Home"),
        make_ctx(confluence_provider),
    )
    wrong = ConfluenceProvider(
        base_url=sandbox_env["CONFLUENCE_BASE_URL"], email="x@example.com", api_token="nope"
    )
    try:
        with pytest.raises(VendorRequestError, match="401: Unauthorized"):
            await run(confluence.find_page(space_key="OPS", title="x"), make_ctx(wrong))
    finally:
        await wrong.close()
