"""The `resolute` CLI against a real database: runs, replay, incidents, post-mortem, audit."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from rich.console import Console
from typer.testing import CliRunner

from orchestrator import cli
from orchestrator import events as ev
from orchestrator.cli import app
from orchestrator.store import Projection, Store

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables as wide as they need: the assertions read whole cells."""
    monkeypatch.setattr(cli, "out", Console(width=250))


TRIGGERED = {"event": {"event_type": "incident.triggered", "occurred_at": "2026-11-27T10:00:00Z"}}
ACKED = {"event": {"event_type": "incident.acknowledged", "occurred_at": "2026-11-27T10:04:30Z"}}


async def _incident(store: Store) -> str:
    await store.register_flow("incident-response", "q", "fp", {"steps": [], "triggers": []})
    await store.heartbeat("w-1", ["q"])
    run_id, _ = await store.start_run("incident-response", TRIGGERED, correlation_key="PINC1")
    [claim] = await store.claim("w-1", "q", ["incident-response"], 1)
    batch: list[ev.Event] = [
        ev.StepStarted(node_path="0", step="diagnostics", attempt=1, node="diagnose"),
        ev.StepCompleted(node_path="0", step="diagnostics", attempt=1, output={"ok": True}),
        ev.RunCompleted(result={"ok": True}),
    ]
    await store.append(run_id, claim.lease_token, 1, batch, Projection("completed"), "w-1")
    await store.start_run("incident-response", ACKED, correlation_key="PINC1")
    return run_id


async def _invoke(database_url: str, *args: str) -> tuple[int, str]:
    # The CLI runs its own event loop: keep it off the test's.
    result = await asyncio.to_thread(runner.invoke, app, [*args, "--database-url", database_url])
    return result.exit_code, result.output


async def test_runs_and_replay(store: Store, database_url: str) -> None:
    run_id = await _incident(store)
    code, text = await _invoke(database_url, "runs", "list", "--flow", "incident-response")
    assert code == 0 and run_id[:8] in text
    code, text = await _invoke(database_url, "runs", "events", run_id)
    assert code == 0 and "step.completed" in text and "diagnostics" in text
    code, text = await _invoke(database_url, "replay", run_id)
    assert code == 0 and '"status": "completed"' in text and '"diagnostics"' in text
    code, text = await _invoke(database_url, "runs", "show", "not-a-run")
    assert code == 1 and "run not-a-run not found" in text


async def test_incidents_and_postmortem(store: Store, database_url: str) -> None:
    await _incident(store)
    code, text = await _invoke(database_url, "incidents", "list")
    assert code == 0 and "PINC1" in text and "4m 30s" in text
    code, text = await _invoke(database_url, "incidents", "show", "PINC1")
    assert code == 0 and "completed diagnostics" in text and "w-1" in text
    code, text = await _invoke(database_url, "postmortem", "PINC1")
    assert code == 0
    assert "# Post-mortem: incident PINC1" in text and "time to acknowledge: 4m 30s" in text
    assert "Diagnostics run: 1" in text
    code, text = await _invoke(database_url, "incidents", "show", "NOPE")
    assert code == 1 and "no runs carry the correlation key 'NOPE'" in text


async def test_audit_verify(store: Store, database_url: str, pg: asyncpg.Connection) -> None:
    run_id = await _incident(store)
    code, text = await _invoke(database_url, "audit", "verify")
    assert code == 0 and "every hash chain intact" in text
    await pg.execute("ALTER TABLE run_events DISABLE TRIGGER run_events_append_only")
    await pg.execute(
        "UPDATE run_events SET worker_id = 'mallory' WHERE run_id = $1 AND seq = 3", run_id
    )
    await pg.execute("ALTER TABLE run_events ENABLE TRIGGER run_events_append_only")
    code, text = await _invoke(database_url, "audit", "verify", run_id)
    assert code == 1 and f"run {run_id} at event 3 (step.completed)" in text


@pytest.mark.parametrize("bad", ["{not json", "[1, 2"])
def test_trigger_rejects_bad_json(bad: str) -> None:
    result = runner.invoke(app, ["trigger", "f", "--input", bad])
    assert result.exit_code != 0 and "not valid JSON" in result.output
