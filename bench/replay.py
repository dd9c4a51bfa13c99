"""Replay cost: rebuild the state of one run with 10,000 events (Resolute only).

The log is synthesised with the real event models and written with the same columns
and JSON the worker writes (``event_data``), for a flow of 4,999 sequential steps:
run.started, step.started/step.completed per step, and the run.resumed a worker appends
when it takes over a crashed run whose last step had just completed. Timed
separately: loading (``Store.events``: SQL plus parsing every row into an event),
``fold`` (the state a worker rebuilds when it claims a run), and one ``decide`` over the
folded state (what the claiming worker does next).
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench import workload as w
from orchestrator import Flow, node
from orchestrator import events as ev
from orchestrator.database import create_engine, migrate
from orchestrator.interpreter import decide
from orchestrator.state import fold
from orchestrator.store import Store


@node("replay-step")
async def replay_step() -> dict[str, Any]:
    return {}


def _log(steps: int, body: dict[str, Any]) -> list[ev.Event]:
    event = w.parse(body)
    out: list[ev.Event] = []
    for i in range(steps):
        common: dict[str, Any] = {"node_path": str(i), "step": f"s{i}", "attempt": 1}
        out.append(ev.StepStarted(**common, node="replay-step", input=event))
        out.append(ev.StepCompleted(**common, output=w.create_ticket(event), duration_ms=1.0))
    out.append(ev.RunResumed(reason="recovery", previous_worker="crashed"))
    return out


async def measure(url: str, events: int, repeats: int) -> dict[str, Any]:
    await migrate(url)
    steps = (events - 2) // 2
    flow = Flow("replay")
    for i in range(steps):
        flow = flow.then(replay_step.as_(f"s{i}"))
    definition = flow.build()
    engine = create_engine(url, pool_size=2)
    store = Store(engine)
    conn = await asyncpg.connect(url)
    try:
        await store.register_flow("replay", "bench", definition.fingerprint, [])
        body = w.payload(0)
        run_id, _ = await store.start_run("replay", body)
        log = _log(steps, body)
        await conn.execute(
            """INSERT INTO run_events (run_id, seq, type, node_path, step, attempt, data)
               SELECT $1::uuid, s, t, p, st, a, d::jsonb
                 FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::int[],
                             $7::text[]) AS e(s, t, p, st, a, d)""",
            run_id,
            list(range(2, len(log) + 2)),
            [e.type for e in log],
            [e.node_path for e in log],
            [e.step for e in log],
            [e.attempt for e in log],
            [ev.event_data(e) for e in log],
        )
        await conn.execute(
            "UPDATE flow_runs SET status = 'running', last_seq = $2 WHERE run_id = $1::uuid",
            run_id,
            len(log) + 1,
        )
        load, fold_s, decide_s = [], [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            loaded = await store.events(run_id)
            t1 = time.perf_counter()
            state = fold(loaded, run_id)
            t2 = time.perf_counter()
            decision = decide(definition, state, datetime.now(UTC))
            t3 = time.perf_counter()
            assert len(loaded) == events and state.last_seq == events
            assert [e.type for e in decision.events] == ["run.completed"]
            load.append(t1 - t0)
            fold_s.append(t2 - t1)
            decide_s.append(t3 - t2)
        size = await conn.fetchval(
            "SELECT sum(pg_column_size(e.*)) FROM run_events e WHERE run_id = $1::uuid", run_id
        )
        return {
            "events": events,
            "load_ms": 1000 * statistics.median(load),
            "fold_ms": 1000 * statistics.median(fold_s),
            "decide_ms": 1000 * statistics.median(decide_s),
            "log_bytes": int(size),
        }
    finally:
        await conn.close()
        await engine.dispose()
