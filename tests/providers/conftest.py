"""Fixtures for the provider tests: the sandbox, providers pointed at it, step contexts.

Every request goes to the sandbox on 127.0.0.1; backoffs are shrunk so retries take
milliseconds. The vendor contracts are read in place (``RESOLUTE_CONTRACTS_DIR`` or
``<repo>/../shared/contracts``) and tests needing them skip when they are absent.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.node import Node, Provider, StepContext
from orchestrator.refs import resolve
from orchestrator.state import FlowState, RunState
from providers.confluence import ConfluenceProvider
from providers.http import RetryConfig
from providers.jira import JiraProvider
from providers.pagerduty import PagerDutyProvider
from providers.sandbox import Sandbox, start_sandbox
from providers.slack import SlackProvider

CONTRACTS = Path(
    os.environ.get("RESOLUTE_CONTRACTS_DIR")
    or Path(__file__).resolve().parents[2].parent / "shared" / "contracts"
)

FAST = RetryConfig(
    timeout=2.0, max_attempts=3, backoff_base=0.01, backoff_max=0.05, max_retry_after=5.0
)

Run = Callable[..., Awaitable[Any]]
MakeContext = Callable[..., StepContext]


def load_contract(relative: str) -> Any:
    """A contract file, or skip the test with the reason."""
    path = CONTRACTS / relative
    if not path.is_file():
        pytest.skip(
            f"vendor contract {relative} not found under {CONTRACTS} "
            "(set RESOLUTE_CONTRACTS_DIR to the shared/contracts folder)"
        )
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def contract() -> Callable[[str], Any]:
    """``contract("jira/jira-examples.json")``: the parsed file, or a skip."""
    return load_contract


@pytest.fixture(scope="session")
async def sandbox_server() -> AsyncIterator[Sandbox]:
    sandbox = await start_sandbox()
    yield sandbox
    await sandbox.close()


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Iterator[Sandbox]:
    """The shared sandbox; faults a test injected are dropped after it."""
    yield sandbox_server
    sandbox_server.clear_faults()


@pytest.fixture
def sandbox_env(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = sandbox.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
async def pd(sandbox_env: dict[str, str]) -> AsyncIterator[PagerDutyProvider]:
    provider = PagerDutyProvider.from_env(FAST)
    yield provider
    await provider.close()


@pytest.fixture
async def jira_provider(sandbox_env: dict[str, str]) -> AsyncIterator[JiraProvider]:
    provider = JiraProvider.from_env(FAST)
    yield provider
    await provider.close()


@pytest.fixture
async def slack_provider(sandbox_env: dict[str, str]) -> AsyncIterator[SlackProvider]:
    provider = SlackProvider.from_env(FAST)
    yield provider
    await provider.close()


@pytest.fixture
async def confluence_provider(
    sandbox_env: dict[str, str],
) -> AsyncIterator[ConfluenceProvider]:
    provider = ConfluenceProvider.from_env(FAST)
    yield provider
    await provider.close()


@pytest.fixture
def make_ctx() -> MakeContext:
    """``make_ctx(*providers, run_id=, outputs=, payload=)``: a context for one step
    (``payload`` is the trigger payload, the alias ``input``)."""

    def make(
        *providers: Provider,
        run_id: str | None = None,
        node_path: str = "0",
        attempt: int = 1,
        outputs: dict[str, Any] | None = None,
        payload: Any = None,
    ) -> StepContext:
        run_id = run_id or f"run-{uuid.uuid4().hex[:12]}"
        state = RunState(run_id, input=payload, outputs=dict(outputs or {}))
        return StepContext(
            run_id=run_id,
            flow="provider-tests",
            step="step",
            node_path=node_path,
            attempt=attempt,
            state=FlowState(state),
            providers=providers,
        )

    return make


async def run_node(node: Node, ctx: StepContext) -> Any:
    """What the engine does with a step: resolve, validate, invoke, validate the output."""
    value = node.input_adapter.validate_python(resolve(node.binding, ctx.state))
    return node.output_adapter.validate_python(await node.invoke(ctx, value))


@pytest.fixture
def run() -> Run:
    return run_node
