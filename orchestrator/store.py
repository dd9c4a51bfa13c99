"""The only code that talks SQL: append with fencing, load, claim, projections."""

from __future__ import annotations

import functools
import json
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from pydantic import BaseModel
from sqlalchemy import TextClause
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import events as ev
from . import sql
from .errors import LeaseLostError, RunNotFoundError, UnknownFlowError
from .interpreter import InboxSignal

__all__ = [
    "BrokenLink",
    "Claim",
    "DeliveryResult",
    "DeliveryTarget",
    "Projection",
    "RunInfo",
    "SignalResult",
    "Store",
]


class RunInfo(BaseModel):
    """A row of ``flow_runs``: the projection of a run's events."""

    run_id: str
    flow: str
    fingerprint: str
    task_queue: str
    status: str
    input: Any = None
    correlation_key: str | None = None
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    lease_owner: str | None = None
    lease_token: int | None = None
    wake_at: datetime | None = None
    last_seq: int
    result: Any = None
    error: str | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    run_id: str
    flow: str
    lease_token: int
    last_seq: int
    prior_status: str  # pending | running (crashed owner) | waiting | restart
    signal_version: int = 0  # flow_runs.signal_version when claimed


@dataclass(frozen=True, slots=True)
class Projection:
    """What ``flow_runs`` says after an append."""

    status: str
    wake_at: datetime | None = None
    result: Any = None
    error: str | None = None
    release: bool = False


@dataclass(frozen=True, slots=True)
class Boundary:
    """One run's step boundary: the events after ``expected_seq`` (the log's end as its
    owner knows it) and what ``flow_runs`` says afterwards."""

    run_id: str
    lease_token: int
    expected_seq: int
    events: Sequence[ev.Event]
    projection: Projection
    signal_version: int | None = None  # as the owner last saw it (see migration 0005)


@dataclass(frozen=True, slots=True)
class BrokenLink:
    """The first event of a run whose hash chain does not hold."""

    run_id: str
    seq: int
    type: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """A flow listening on a webhook route."""

    flow: str
    deliver_to_active: bool = False
    signal_name: str | None = None  # the event type, when delivered to an active run


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    delivery: int
    duplicate: bool
    run_ids: list[str] = field(default_factory=list)
    signal_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SignalResult:
    signal_id: int
    duplicate: bool
    started: list[str] = field(default_factory=list)  # runs of signal-triggered flows


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class Store:
    def __init__(self, engine: AsyncEngine, pool: asyncpg.Pool | None = None) -> None:
        self.engine = engine
        # The worker's hot path (appends, claims, loading claimed runs) on connections of
        # its own, without SQLAlchemy's checkout around every statement; without a pool,
        # the engine's connections serve.
        self.pool = pool

    async def _rows(self, statement: Any, params: dict[str, Any]) -> Sequence[Any]:
        async with self.engine.connect() as conn:
            return (await conn.execute(statement, params)).all()

    async def _exec(self, statement: Any, params: dict[str, Any]) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(statement, params)).rowcount

    async def _fetch_driver(self, statement: TextClause, params: dict[str, Any]) -> list[Any]:
        """The hot path: the same named statement straight through asyncpg (prepared
        once per connection), skipping SQLAlchemy's per-call work."""
        text, names = _positional(statement)
        args = [params[n] for n in names]
        rows: list[Any]
        if self.pool is not None:
            rows = await self.pool.fetch(text, *args)
            return rows
        async with self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            rows = await driver.fetch(text, *args)
        return rows

    # --- flows and runs -------------------------------------------------------------

    async def register_flow(self, name: str, task_queue: str, fingerprint: str, shape: Any) -> None:
        await self._exec(
            sql.REGISTER_FLOW,
            {
                "name": name,
                "task_queue": task_queue,
                "fingerprint": fingerprint,
                "shape": _dumps(shape),
            },
        )

    async def start_run(
        self,
        flow: str,
        input: Any,
        *,
        idempotency_key: str | None = None,
        correlation_key: str | None = None,
        parent_run_id: str | None = None,
        trigger: str = "manual",
    ) -> tuple[str, bool]:
        """(run_id, created). A known idempotency key returns the existing run."""
        async with self.engine.connect() as conn:
            return await self._start_run(
                conn, flow, input, idempotency_key, correlation_key, parent_run_id, trigger
            )

    async def _start_run(
        self,
        conn: AsyncConnection,
        flow: str,
        input: Any,
        idempotency_key: str | None,
        correlation_key: str | None,
        parent_run_id: str | None,
        trigger: str,
    ) -> tuple[str, bool]:
        rows = (await conn.execute(sql.FLOW, {"name": flow})).all()
        if not rows:
            known = [r.name for r in (await conn.execute(sql.FLOWS)).all()]
            raise UnknownFlowError(flow, known)
        task_queue, fingerprint = rows[0].task_queue, rows[0].fingerprint
        run_id = str(uuid.uuid4())
        started = ev.RunStarted(
            flow=flow,
            fingerprint=fingerprint,
            input=input,
            correlation_key=correlation_key,
            idempotency_key=idempotency_key,
            parent_run_id=parent_run_id,
            trigger=trigger,
        )
        params = {
            "run_id": run_id,
            "flow": flow,
            "fingerprint": fingerprint,
            "task_queue": task_queue,
            "input": _dumps(input),
            "correlation_key": correlation_key,
            "idempotency_key": idempotency_key,
            "parent_run_id": parent_run_id,
            "data": ev.event_data(started),
        }
        rows = (await conn.execute(sql.START_RUN, params)).all()
        if rows:
            return str(rows[0].run_id), True
        existing = (
            await conn.execute(
                sql.RUN_BY_IDEMPOTENCY_KEY, {"flow": flow, "idempotency_key": idempotency_key}
            )
        ).all()
        return str(existing[0].run_id), False

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """Several statements that must commit together (the engine is autocommit)."""
        async with self.engine.connect() as conn:
            tx_conn = await conn.execution_options(isolation_level="READ COMMITTED")
            async with tx_conn.begin():
                yield tx_conn

    async def get_run(self, run_id: str) -> RunInfo:
        try:
            uuid.UUID(run_id)
        except ValueError as exc:  # a database error, though, is not "not found"
            raise RunNotFoundError(run_id) from exc
        rows = await self._rows(sql.GET_RUN, {"run_id": run_id})
        if not rows:
            raise RunNotFoundError(run_id)
        return _run_info(rows[0])

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | None = None,
        correlation_key: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> list[RunInfo]:
        """Newest first; ``after`` is the (created_at, run_id) of the last row seen."""
        params = {
            "flow": flow,
            "status": status,
            "correlation_key": correlation_key,
            "since": since,
            "until": until,
            "after_created": after[0] if after else None,
            "after_run": after[1] if after else None,
            "limit": limit,
        }
        return [_run_info(r) for r in await self._rows(sql.LIST_RUNS, params)]

    async def events(self, run_id: str, after: int = 0) -> list[ev.Event]:
        rows = await self._rows(sql.EVENTS, {"run_id": run_id, "after": after})
        return [_event(r._mapping) for r in rows]

    async def cancel(self, run_id: str, reason: str, by: str | None) -> bool:
        """Cancel a run that has not ended. False when it had already ended."""
        await self.get_run(run_id)
        data = ev.event_data(ev.RunCancelled(reason=reason, by=by))
        rows = await self._rows(
            sql.CANCEL, {"run_id": run_id, "reason": reason, "data": data, "by": by}
        )
        return bool(rows)

    async def retry(self, run_id: str, by: str | None) -> bool:
        """Send a failed run back to work from its failed step. False if it had not failed."""
        await self.get_run(run_id)
        data = ev.event_data(ev.RunResumed(reason="retry-run", previous_worker=by))
        rows = await self._rows(sql.RETRY_RUN, {"run_id": run_id, "data": data, "by": by})
        return bool(rows)

    # --- signals and webhook deliveries -----------------------------------------------

    async def send_signal(
        self,
        name: str,
        payload: Any = None,
        *,
        run_id: str | None = None,
        correlation_key: str | None = None,
        idempotency_key: str | None = None,
        sent_by: str | None = None,
    ) -> SignalResult:
        """Keep a signal for its run(s); a signal not aimed at one run also starts the
        flows triggered by it. All in one transaction: nothing half-sent."""
        if run_id is not None:
            await self.get_run(run_id)
        async with self._transaction() as conn:
            return await self._send_signal(
                conn, name, payload, run_id, correlation_key, idempotency_key, sent_by
            )

    async def _send_signal(
        self,
        conn: AsyncConnection,
        name: str,
        payload: Any,
        run_id: str | None,
        correlation_key: str | None,
        idempotency_key: str | None,
        sent_by: str | None,
    ) -> SignalResult:
        params = {
            "name": name,
            "run_id": run_id,
            "correlation_key": correlation_key,
            "payload": _dumps(payload),
            "idempotency_key": idempotency_key,
            "sent_by": sent_by,
        }
        rows = (await conn.execute(sql.SEND_SIGNAL, params)).all()
        if not rows:
            found = await conn.execute(
                sql.SIGNAL_BY_IDEMPOTENCY_KEY, {"idempotency_key": idempotency_key}
            )
            return SignalResult(int(found.scalar_one()), duplicate=True)
        signal_id = int(rows[0].id)
        started: list[str] = []
        if run_id is None:
            for flow in (await conn.execute(sql.SIGNAL_FLOWS, {"name": name})).scalars():
                rid, _ = await self._start_run(
                    conn, flow, payload, f"signal:{signal_id}", correlation_key, None, "signal"
                )
                started.append(rid)
        return SignalResult(signal_id, duplicate=False, started=started)

    async def inbox(
        self, run_id: str, keys: list[str], names: list[str], consumed: list[int]
    ) -> tuple[int, list[InboxSignal]]:
        """The run's signal_version and the signals kept for it, in one snapshot."""
        params = {"run_id": run_id, "keys": keys, "names": names, "consumed": consumed}
        rows = await self._rows(sql.INBOX, params)
        if not rows:
            raise RunNotFoundError(run_id)
        signals = [
            InboxSignal(
                r.id,
                r.name,
                r.payload,
                r.sent_at,
                None if r.run_id is None else str(r.run_id),
                r.correlation_key,
            )
            for r in rows
            if r.id is not None
        ]
        return rows[0].signal_version, signals

    async def record_delivery(
        self,
        *,
        route: str,
        delivery_id: str,
        headers: dict[str, str],
        body: Any,
        verification: str,
        correlation_key: str | None,
        targets: Sequence[DeliveryTarget],
    ) -> DeliveryResult:
        """Store an accepted delivery and start (or signal) its runs, atomically: one
        statement (``sql.record_delivery``), so one round trip and one commit.

        A redelivery (same route and delivery id) returns the first delivery's runs.
        """
        key = f"webhook:{route}:{delivery_id}"
        started = ev.RunStarted(
            flow="",  # the statement fills in flow, fingerprint and input
            fingerprint="",
            correlation_key=correlation_key,
            idempotency_key=key,
            trigger="webhook",
        )
        params = {
            "route": route,
            "delivery_id": delivery_id,
            "headers": _dumps(headers),
            "body": _dumps(body),
            "verification": verification,
            "correlation_key": correlation_key,
            "idempotency_key": key,
            "flows": [t.flow for t in targets],
            "to_active": [t.deliver_to_active for t in targets],
            "signal_names": [t.signal_name or "webhook" for t in targets],
            "started": ev.event_data(started),
        }
        rows = await self._rows(sql.record_delivery(len(targets)), params)
        if prior := next((r for r in rows if r.duplicate), None):
            return _delivery(prior, duplicate=True)
        if missing := next((r.missing for r in rows if r.missing is not None), None):
            known = [r.name for r in await self._rows(sql.FLOWS, {})]
            raise UnknownFlowError(missing, known)
        if rows:
            return _delivery(rows[0], duplicate=False)
        # Stored by a statement that committed after this one began: read it now.
        old = await self._rows(sql.DELIVERY_BY_ID, {"route": route, "delivery_id": delivery_id})
        return _delivery(old[0], duplicate=True)

    async def record_rejected_delivery(
        self, *, route: str, delivery_id: str, headers: dict[str, str], error: str
    ) -> None:
        """A delivery that failed verification: kept for the audit, body not stored."""
        params = {
            "route": route,
            "delivery_id": delivery_id,
            "headers": _dumps(headers),
            "body": None,
            "verification": "failed",
            "correlation_key": None,
            "error": error,
        }
        await self._exec(sql.RECORD_REJECTED_DELIVERY, params)

    async def recorded_output(
        self, correlation_key: str, alias: str, flow: str | None, exclude_run: str
    ) -> tuple[bool, Any]:
        """(found, output) of the newest ``alias`` step another run of the incident
        completed (``StepContext.correlated``)."""
        rows = await self._rows(
            sql.CORRELATED_OUTPUT,
            {
                "correlation_key": correlation_key,
                "alias": alias,
                "flow": flow,
                "exclude_run": exclude_run,
            },
        )
        return (True, rows[0].output) if rows else (False, None)

    async def incidents(self, incident: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Rows of ``incident_metrics``, newest incident first."""
        rows = await self._rows(sql.INCIDENTS, {"incident": incident, "limit": limit})
        return [dict(r._mapping) for r in rows]

    async def incident_timeline(self, incident: str) -> list[dict[str, Any]]:
        rows = await self._rows(sql.INCIDENT_TIMELINE, {"incident": incident})
        return [dict(r._mapping) for r in rows]

    async def verify_chain(self, run_id: str | None = None) -> tuple[int, list[BrokenLink]]:
        """(events checked, first broken link of each run whose chain does not hold)."""
        rows = await self._rows(sql.AUDIT_VERIFY, {"run_id": run_id})
        broken = [
            BrokenLink(
                str(r.run_id),
                r.seq,
                r.type,
                "a gap or reordering in the sequence"
                if not r.seq_ok
                else "its hash does not match its content and its predecessor's hash",
            )
            for r in rows
            if r.run_id is not None
        ]
        return (rows[0].checked if rows else 0), broken

    # --- operations -------------------------------------------------------------------

    async def run_counts(self) -> list[tuple[str, str, int]]:
        return [(r.flow, r.status, r.n) for r in await self._rows(sql.RUN_COUNTS, {})]

    async def queue_depth(self) -> dict[str, int]:
        return {r.task_queue: r.n for r in await self._rows(sql.QUEUE_DEPTH, {})}

    async def schema_version(self) -> str | None:
        try:
            rows = await self._rows(sql.SCHEMA_VERSION, {})
        except DBAPIError:
            return None
        return rows[0].version_num if rows else None

    # --- worker side ---------------------------------------------------------------

    async def heartbeat(self, worker_id: str, task_queues: list[str]) -> None:
        await self._exec(
            sql.HEARTBEAT,
            {
                "worker_id": worker_id,
                "task_queues": task_queues,
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
            },
        )

    async def claim(
        self, worker_id: str, task_queue: str, flows: list[str], limit: int
    ) -> list[Claim]:
        rows = await self._fetch_driver(
            sql.CLAIM,
            {"worker_id": worker_id, "task_queue": task_queue, "flows": flows, "limit": limit},
        )
        return [_claim(r) for r in rows]

    async def reclaim_own(self, worker_id: str, flows: list[str]) -> list[Claim]:
        rows = await self._fetch_driver(sql.RECLAIM_OWN, {"worker_id": worker_id, "flows": flows})
        return [_claim(r) for r in rows]

    async def load(self, run_ids: list[str]) -> dict[str, list[ev.Event]]:
        rows = await self._fetch_driver(sql.EVENTS_FOR_RUNS, {"run_ids": run_ids})
        out: dict[str, list[ev.Event]] = defaultdict(list)
        for r in rows:
            out[str(r["run_id"])].append(_event(r))
        return out

    async def append(
        self,
        run_id: str,
        lease_token: int,
        expected_seq: int,
        events: Sequence[ev.Event],
        projection: Projection,
        worker_id: str,
    ) -> None:
        """Append one run's boundary under the lease fence."""
        boundary = Boundary(run_id, lease_token, expected_seq, events, projection)
        if await self.append_many([boundary], worker_id):
            raise LeaseLostError(run_id)

    async def append_many(self, boundaries: Sequence[Boundary], worker_id: str) -> set[str]:
        """Append the boundaries of several runs in one statement (one commit); returns
        the runs whose fence failed (another writer owns them now), whose events were
        not written. The others are durable when this returns."""
        try:
            passed = await self._fetch_driver(sql.APPEND, _append_params(boundaries, worker_id))
        except asyncpg.UniqueViolationError:
            # A racing writer took a seq of one run: write one by one so only it fails.
            if len(boundaries) == 1:
                return {boundaries[0].run_id}
            lost: set[str] = set()
            for b in boundaries:
                lost |= await self.append_many([b], worker_id)
            return lost
        return {b.run_id for b in boundaries} - {str(r[0]) for r in passed}

    async def release(
        self,
        run_id: str,
        lease_token: int,
        status: str,
        wake_at: datetime | None,
        signal_version: int | None = None,
    ) -> None:
        """Hand the run back; as ``waiting`` it is due at once if a signal came since
        the owner saw ``signal_version`` (``None``: due at once if ever signalled)."""
        params = {"run_id": run_id, "lease_token": lease_token, "status": status}
        params |= {"wake_at": wake_at, "signal_version": signal_version}
        if not await self._exec(sql.RELEASE_RUN, params):
            raise LeaseLostError(run_id)

    async def recover_expired(self, lease_seconds: float) -> list[str]:
        rows = await self._rows(sql.RECOVER_EXPIRED, {"lease_seconds": lease_seconds})
        return [str(r.run_id) for r in rows]

    async def release_all(self, worker_id: str) -> int:
        return len(await self._rows(sql.RELEASE_ALL, {"worker_id": worker_id}))


_ASYNCPG = asyncpg_dialect()  # type: ignore[no-untyped-call]


@functools.cache
def _positional(statement: TextClause) -> tuple[str, tuple[str, ...]]:
    """A named statement in asyncpg's ``$n`` form, and the parameter names in order."""
    compiled = statement.compile(dialect=_ASYNCPG)
    return str(compiled), tuple(compiled.positiontup or ())


def _append_params(boundaries: Sequence[Boundary], worker_id: str) -> dict[str, Any]:
    """APPEND's parameters: one array element per boundary, and one per event."""
    p: dict[str, list[Any]] = {n: [] for n in _positional(sql.APPEND)[1] if n != "worker_id"}
    for b in boundaries:
        proj = b.projection
        p["run_ids"].append(b.run_id)
        p["lease_tokens"].append(b.lease_token)
        p["expected_seqs"].append(b.expected_seq)
        p["last_seqs"].append(b.expected_seq + len(b.events))
        p["statuses"].append(proj.status)
        p["wake_ats"].append(proj.wake_at)
        p["results"].append(None if proj.result is None else _dumps(proj.result))
        p["errors"].append(proj.error)
        p["releases"].append(proj.release)
        p["signal_versions"].append(b.signal_version)
        for i, e in enumerate(b.events, b.expected_seq + 1):
            p["event_runs"].append(b.run_id)
            p["seqs"].append(i)
            p["types"].append(e.type)
            p["node_paths"].append(e.node_path)
            p["steps"].append(e.step)
            p["attempts"].append(e.attempt)
            p["datas"].append(ev.event_data(e))
    return {"worker_id": worker_id, **p}


def _delivery(r: Any, *, duplicate: bool) -> DeliveryResult:
    return DeliveryResult(
        int(r.id), duplicate, [str(x) for x in r.run_ids], [int(x) for x in r.signal_ids]
    )


def _claim(r: Mapping[str, Any]) -> Claim:
    return Claim(
        str(r["run_id"]),
        r["flow"],
        r["lease_token"],
        r["last_seq"],
        r["prior_status"],
        r["signal_version"],
    )


def _run_info(r: Any) -> RunInfo:
    fields = dict(r._mapping)
    fields["run_id"] = str(fields["run_id"])
    if fields["parent_run_id"] is not None:
        fields["parent_run_id"] = str(fields["parent_run_id"])
    return RunInfo.model_validate(fields)


def _event(r: Mapping[str, Any]) -> ev.Event:
    """An event from a row (an asyncpg record, or a SQLAlchemy row's ``_mapping``)."""
    return ev.parse_event(
        type=r["type"],
        data=r["data"],
        node_path=r["node_path"],
        step=r["step"],
        attempt=r["attempt"],
        seq=r["seq"],
        recorded_at=r["recorded_at"],
        worker_id=r["worker_id"],
    )
