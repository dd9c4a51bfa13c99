"""Confluence Cloud (REST v2): create a page once, find a page by title.

``create_page`` looks the title up in the space before creating, so a step re-run after
a crash returns the page the earlier attempt made (titles are unique per space).
Labels are added through the v1 label endpoint (v2 has none), which ignores labels the
page already carries.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SecretStr

from orchestrator.node import Node, RetryPolicy, StepContext

from .binding import Bind, provider_node
from .errors import NotFoundError
from .http import AtlassianSettings, RetryConfig, basic_auth_client

__all__ = [
    "ConfluencePage",
    "ConfluenceProvider",
    "Provider",
    "create_page",
    "find_page",
]


def _error(body: Any) -> str | None:
    """v2 ``{"errors": [{status, code, title, detail}]}`` or v1 ``{"message": ...}``."""
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(
            " - ".join(str(e[k]) for k in ("title", "detail") if isinstance(e, dict) and e.get(k))
            or str(e)
            for e in errors
        )
    return str(body["message"]) if body.get("message") else None


class ConfluenceProvider:
    """A Confluence Cloud site (``https://<site>.atlassian.net/wiki``), HTTP Basic auth."""

    name = "confluence"

    def __init__(
        self,
        *,
        base_url: str,
        email: str,
        api_token: str | SecretStr,
        retry: RetryConfig | None = None,
    ) -> None:
        self.client = basic_auth_client(
            "confluence",
            base_url,
            email=email,
            api_token=api_token,
            error_message=_error,
            retry=retry,
        )

    @classmethod
    def from_env(cls, retry: RetryConfig | None = None) -> ConfluenceProvider:
        """Read ``CONFLUENCE_BASE_URL``, ``CONFLUENCE_EMAIL`` and ``CONFLUENCE_API_TOKEN``."""
        base_url, email, api_token = AtlassianSettings.read(
            "Confluence", "https://<site>.atlassian.net/wiki"
        )
        return cls(
            base_url=base_url, email=email, api_token=api_token, retry=retry or RetryConfig()
        )

    async def close(self) -> None:
        await self.client.close()


Provider = ConfluenceProvider


class ConfluencePage(BaseModel):
    id: str
    title: str
    space_id: str
    url: str | None = None
    version: int | None = None
    labels: list[str] = []


class CreatePageInput(BaseModel):
    space_key: str = Field(min_length=1)
    title: str = Field(min_length=1, max_length=255)
    body: str = Field(description="storage format (XHTML)")
    parent_id: str | None = None
    labels: list[str] = []


class FindPageInput(BaseModel):
    space_key: str = Field(min_length=1)
    title: str = Field(min_length=1)


def _page(data: dict[str, Any], base: str | None) -> ConfluencePage:
    links = data.get("_links") or {}
    base = links.get("base") or base
    return ConfluencePage(
        id=str(data["id"]),
        title=data["title"],
        space_id=str(data["spaceId"]),
        url=base + links["webui"] if base and links.get("webui") else None,
        version=(data.get("version") or {}).get("number"),
    )


async def _space_id(confluence: ConfluenceProvider, key: str) -> str:
    answer = await confluence.client.request(
        "GET", "/api/v2/spaces", operation="find space", params={"keys": key}
    )
    results = answer.get("results") or []
    if not results:
        raise NotFoundError(f"confluence: no space with key {key!r}")
    return str(results[0]["id"])


async def _find(confluence: ConfluenceProvider, space_id: str, title: str) -> ConfluencePage | None:
    answer = await confluence.client.request(
        "GET",
        "/api/v2/pages",
        operation="find page",
        params={"space-id": space_id, "title": title, "status": "current"},
    )
    results = answer.get("results") or []
    base = (answer.get("_links") or {}).get("base")
    return _page(results[0], base) if results else None


async def _create_page(ctx: StepContext, inp: CreatePageInput) -> ConfluencePage:
    confluence = ctx.provider(ConfluenceProvider)
    space_id = await _space_id(confluence, inp.space_key)
    page = await _find(confluence, space_id, inp.title)
    if page is not None:
        ctx.logger.info("confluence: page %s %r already exists; reusing it", page.id, page.title)
    else:
        body: dict[str, Any] = {
            "spaceId": space_id,
            "status": "current",
            "title": inp.title,
            "body": {"representation": "storage", "value": inp.body},
        }
        if inp.parent_id:
            body["parentId"] = inp.parent_id
        # Not replay-safe: after an ambiguous failure the step retries and looks up first.
        created = await confluence.client.request(
            "POST", "/api/v2/pages", operation="create page", json_body=body, replay_safe=False
        )
        page = _page(created, None)
    if inp.labels:
        await confluence.client.request(
            "POST",
            f"/rest/api/content/{page.id}/label",
            operation="add labels",
            json_body=[{"prefix": "global", "name": label} for label in inp.labels],
            replay_safe=True,
        )
        page.labels = inp.labels
    return page


async def _find_page(ctx: StepContext, inp: FindPageInput) -> ConfluencePage | None:
    confluence = ctx.provider(ConfluenceProvider)
    return await _find(confluence, await _space_id(confluence, inp.space_key), inp.title)


def create_page(
    *,
    space_key: Bind[str],
    title: Bind[str],
    body: Bind[str],
    parent_id: Bind[str] | None = None,
    labels: Bind[list[str]] | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """Create a page (storage-format ``body``) unless the title already exists in the space."""
    return provider_node(
        "confluence.create_page",
        _create_page,
        CreatePageInput,
        ConfluencePage,
        {
            "space_key": space_key,
            "title": title,
            "body": body,
            "parent_id": parent_id,
            "labels": labels,
        },
        retry=retry,
        timeout=timeout,
    )


def find_page(
    *,
    space_key: Bind[str],
    title: Bind[str],
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
) -> Node:
    """The current page with exactly this title in the space, or ``None``."""
    return provider_node(
        "confluence.find_page",
        _find_page,
        FindPageInput,
        ConfluencePage | None,
        {"space_key": space_key, "title": title},
        retry=retry,
        timeout=timeout,
    )
