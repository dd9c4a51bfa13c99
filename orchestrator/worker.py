"""The worker: claim -> replay -> decide -> execute -> append, for many runs at once.

A claimed run stays in memory while it has work in flight (depth first: runs already
started finish before new ones are claimed) and leaves memory while it waits for a
timer, a retry far away or a signal. Each step boundary is one statement: the outcome
of the step that ended and the start of the next, appended under the lease fence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from . import events as ev
from .database import (
    asyncpg_dsn,
    check_reachable,
    create_engine,
    display_url,
    migrate,
    resolve_database_url,
)
from .definition import Flow, FlowDefinition, NodeStep
from .errors import FlowMismatchError, LeaseLostError, ResoluteError
from .executor import execute
from .interpreter import Decision, check_compatible, decide
from .logs import logger_for
from .node import Provider, StepContext
from .sql import CANCEL_CHANNEL, NOTIFY_CHANNEL
from .state import FlowState, RunState, fold
from .store import Claim, Projection, Store

__all__ = ["Worker", "WorkerConfig"]

log = logging.getLogger("resolute.worker")


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker runs. ``database_url=None``: ``RESOLUTE_DATABASE_URL`` or embedded."""

    task_queue: str = "default"
    max_concurrent: int = 100
    database_url: str | None = None
    worker_id: str | None = None  # stable across restarts so a restart resumes at once
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 3.0
    poll_seconds: float = 1.0
    hold_seconds: float = 2.0  # keep a run in memory when it wakes within this
    shutdown_grace_seconds: float = 10.0
    pool_size: int = 10
    auto_migrate: bool = True
    claim_batch: int = 50

    def identity(self) -> str:
        return (
            self.worker_id
            or os.environ.get("RESOLUTE_WORKER_ID")
            or f"{socket.gethostname()}/{self.task_queue}"
        )


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Driver:
    """One run in memory."""

    claim: Claim
    definition: FlowDefinition
    state: RunState
    seq: int
    tasks: dict[str, asyncio.Task[ev.Event]] = field(default_factory=dict)


class Worker:
    def __init__(self, config: WorkerConfig | None = None) -> None:
        self.config = config or WorkerConfig()
        self.worker_id = self.config.identity()
        self.flows: dict[str, FlowDefinition] = {}
        self.providers: tuple[Provider, ...] = ()
        self.store: Store | None = None
        self.database_url: str | None = None
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._claimer: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._log = logger_for("resolute.worker", worker_id=self.worker_id)

    # --- configuration ----------------------------------------------------------------

    def with_flow(self, *flows: Flow | FlowDefinition) -> Worker:
        for flow in flows:
            definition = flow.build() if isinstance(flow, Flow) else flow
            if definition.name in self.flows:
                raise ResoluteError(f"flow {definition.name!r} registered twice on this worker")
            self.flows[definition.name] = definition
        return self

    def with_providers(self, *providers: Provider) -> Worker:
        self.providers = (*self.providers, *providers)
        return self

    def queue_of(self, definition: FlowDefinition) -> str:
        return definition.task_queue or self.config.task_queue

    # --- lifecycle --------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGINT/SIGTERM, then shut down gracefully."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stopping.set)
            await self.start()
            self._log.info("worker running; Ctrl-C to stop")
            await self._stopping.wait()
            await self.stop()

        asyncio.run(main())

    async def start(self) -> None:
        if not self.flows:
            raise ResoluteError("a worker needs at least one flow: Worker(...).with_flow(flow)")
        url = self.database_url = resolve_database_url(self.config.database_url)
        engine = create_engine(url, pool_size=self.config.pool_size)
        await check_reachable(engine, url)
        if self.config.auto_migrate:
            await migrate(url)
        self.store = Store(engine)
        for d in self.flows.values():
            await self.store.register_flow(d.name, self.queue_of(d), d.fingerprint, _shape(d))
        await self.store.heartbeat(self.worker_id, self._queues())
        self._stopping.clear()
        await self._listen(url)
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.add_job(
            self._heartbeat, "interval", seconds=self.config.heartbeat_seconds, max_instances=1
        )
        self._scheduler.add_job(
            self._recover, "interval", seconds=self.config.lease_seconds / 3, max_instances=1
        )
        self._scheduler.start()
        owned = await self.store.reclaim_own(self.worker_id, list(self.flows))
        await self._spawn(owned)
        self._claimer = asyncio.create_task(self._claim_loop(), name="resolute-claim")
        self._log.info(
            "worker started on %s, queues %s, flows %s",
            display_url(url),
            ", ".join(self._queues()),
            ", ".join(sorted(self.flows)),
        )

    async def stop(self) -> None:
        """Stop claiming, let in-flight steps finish for a grace period, hand leases back."""
        self._stopping.set()
        self._wakeup.set()
        if self._claimer is not None:
            await self._claimer
        if self._drivers:
            _, pending = await asyncio.wait(
                list(self._drivers.values()), timeout=self.config.shutdown_grace_seconds
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                released = await self.store.release_all(self.worker_id)
                if released:
                    self._log.info("handed back %d runs", released)
            await self.store.engine.dispose()
        for p in self.providers:
            with contextlib.suppress(Exception):
                await p.close()

    def _queues(self) -> list[str]:
        return sorted({self.queue_of(d) for d in self.flows.values()})

    async def _listen(self, url: str) -> None:
        try:
            self._listener = await asyncpg.connect(asyncpg_dsn(url))
            await self._listener.add_listener(NOTIFY_CHANNEL, self._on_notify)
            await self._listener.add_listener(CANCEL_CHANNEL, self._on_cancel)
        except (OSError, asyncpg.PostgresError) as exc:
            self._log.warning("LISTEN unavailable (%s); polling only", exc)

    def _on_notify(self, *args: Any) -> None:
        self._wakeup.set()

    def _on_cancel(self, _conn: Any, _pid: int, _channel: str, run_id: str) -> None:
        task = self._drivers.get(run_id)
        if task is not None:
            task.cancel()

    async def _heartbeat(self) -> None:
        assert self.store is not None
        try:
            await self.store.heartbeat(self.worker_id, self._queues())
        except Exception as exc:
            self._log.warning("heartbeat failed: %s", exc)

    async def _recover(self) -> None:
        assert self.store is not None
        try:
            recovered = await self.store.recover_expired(self.config.lease_seconds)
        except Exception as exc:
            self._log.warning("lease recovery failed: %s", exc)
            return
        if recovered:
            self._log.info(
                "recovered %d runs from workers that stopped heartbeating", len(recovered)
            )
            self._wakeup.set()

    # --- claiming ---------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self.store is not None
        flows = list(self.flows)
        while not self._stopping.is_set():
            self._wakeup.clear()
            free = self.config.max_concurrent - len(self._drivers)
            full = False
            if free > 0:
                want = min(free, self.config.claim_batch)
                try:
                    claims: list[Claim] = []
                    for queue in self._queues():
                        claims += await self.store.claim(self.worker_id, queue, flows, want)
                    await self._spawn(claims)
                    full = len(claims) >= want
                except Exception as exc:
                    self._log.warning("claiming failed: %s", exc)
            if full and len(self._drivers) < self.config.max_concurrent:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.config.poll_seconds)

    async def _spawn(self, claims: list[Claim]) -> None:
        if not claims:
            return
        assert self.store is not None
        logs = await self.store.load([c.run_id for c in claims])
        for c in claims:
            task = asyncio.create_task(self._drive(c, logs[c.run_id]), name=f"run-{c.run_id}")
            self._drivers[c.run_id] = task
            task.add_done_callback(functools.partial(self._finished, c.run_id))

    def _finished(self, run_id: str, _task: object = None) -> None:
        self._drivers.pop(run_id, None)
        self._wakeup.set()

    # --- driving one run ----------------------------------------------------------------

    async def _drive(self, claim: Claim, log_events: list[ev.Event]) -> None:
        rlog = logger_for("resolute.run", run_id=claim.run_id, flow=claim.flow)
        definition = self.flows[claim.flow]
        state = fold(log_events, claim.run_id)
        d = _Driver(claim, definition, state, claim.last_seq)
        previous = log_events[-1].worker_id if log_events else None
        try:
            await self._loop(d, rlog, previous)
        except LeaseLostError:
            rlog.warning("lease lost; another writer owns this run now")
        except asyncio.CancelledError:
            rlog.info("stopped driving (cancelled or shutting down)")
        except Exception:
            rlog.exception("driving the run failed; it will be retried after lease expiry")
        finally:
            for task in d.tasks.values():
                task.cancel()
            if d.tasks:
                await asyncio.gather(*d.tasks.values(), return_exceptions=True)

    async def _loop(
        self, d: _Driver, rlog: logging.LoggerAdapter[logging.Logger], previous: str | None
    ) -> None:
        pending: list[ev.Event] = []
        try:
            check_compatible(d.definition, d.state)
        except FlowMismatchError as exc:
            rlog.error("%s", exc)
            await self._append(
                d, [ev.RunFailed(error=str(exc))], Projection("failed", error=str(exc))
            )
            return
        if d.seq > 1 or d.claim.prior_status != "pending":
            pending.append(self._resumed(d, previous))
        while True:
            now = _now()
            for e in pending:
                d.state.apply(e)
            decision = decide(d.definition, d.state, now)
            cancelled = {
                e.node_path
                for e in decision.events
                if isinstance(e, ev.StepCancelled) and e.node_path is not None
            }
            in_flight = (set(d.tasks) - cancelled) | {x.step.path for x in decision.execute}
            stopping = self._stopping.is_set()
            hold = (
                not stopping
                and decision.wake_at is not None
                and (decision.wake_at - now).total_seconds() <= self.config.hold_seconds
            )
            projection = _projection(decision, bool(in_flight), hold or bool(in_flight))
            batch = pending + decision.events
            if batch:
                await self._append(d, batch, projection)
            elif projection.release:
                assert self.store is not None
                await self.store.release(
                    d.claim.run_id, d.claim.lease_token, projection.status, projection.wake_at
                )
            d.state = decision.state or d.state
            pending = []
            for path in cancelled:
                if (task := d.tasks.pop(path, None)) is not None:
                    task.cancel()
            for job in decision.execute:
                d.tasks[job.step.path] = asyncio.create_task(self._run_step(d, job, rlog))
            if d.state.terminal:
                rlog.info("run %s", d.state.status)
                return
            if projection.release:
                return
            if not d.tasks:
                assert decision.wake_at is not None
                await asyncio.sleep(max(0.0, (decision.wake_at - _now()).total_seconds()))
                continue
            timeout = None
            if decision.wake_at is not None:
                timeout = max(0.0, (decision.wake_at - _now()).total_seconds())
            done, _ = await asyncio.wait(
                list(d.tasks.values()), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for path, task in list(d.tasks.items()):
                if task in done:
                    del d.tasks[path]
                    pending.append(task.result())
            if self._stopping.is_set() and pending:
                # Record what finished, hand the run back; the next owner continues it.
                for e in pending:
                    d.state.apply(e)
                status = "running" if d.tasks else "waiting"
                await self._append(d, pending, Projection(status, release=not d.tasks))
                pending = []
                if not d.tasks:
                    return

    def _resumed(self, d: _Driver, previous: str | None) -> ev.RunResumed:
        prior = d.claim.prior_status
        reason: Any = {"running": "recovery", "restart": "restart"}.get(prior)
        if reason is None:
            now = _now()
            st = d.state
            if any(not t.fired and t.fire_at <= now for t in st.timers.values()):
                reason = "timer"
            elif any(r.status == "retrying" for r in st.steps.values()):
                reason = "retry"
            else:
                reason = "signal"
        return ev.RunResumed(reason=reason, previous_worker=previous)

    async def _append(self, d: _Driver, batch: list[ev.Event], projection: Projection) -> None:
        assert self.store is not None
        await self.store.append(
            d.claim.run_id, d.claim.lease_token, d.seq, batch, projection, self.worker_id
        )
        d.seq += len(batch)

    async def _run_step(
        self, d: _Driver, job: Any, rlog: logging.LoggerAdapter[logging.Logger]
    ) -> ev.Event:
        step: NodeStep = job.step
        ctx = StepContext(
            run_id=d.claim.run_id,
            flow=d.definition.name,
            step=step.alias,
            node_path=step.path,
            attempt=job.attempt,
            state=FlowState(d.state, d.definition),
            logger=logger_for(
                "resolute.step",
                run_id=d.claim.run_id,
                flow=d.definition.name,
                step=step.alias,
                attempt=job.attempt,
            ),
            providers=self.providers,
        )
        rec = d.state.steps.get(step.path)
        return await execute(job, ctx, rec.failures if rec else 0)


def _projection(decision: Decision, in_flight: bool, keep: bool) -> Projection:
    st = decision.state
    assert st is not None
    if st.terminal:
        return Projection(st.status, result=st.result, error=st.error, release=True)
    if in_flight:
        return Projection("running", wake_at=decision.wake_at)
    return Projection("waiting", wake_at=decision.wake_at, release=not keep)


def _shape(definition: FlowDefinition) -> list[dict[str, Any]]:
    return [
        {
            "path": s.path,
            "kind": s.kind,
            "alias": s.alias,
            "node": s.node.name if isinstance(s, NodeStep) else None,
        }
        for s in definition.index.values()
    ]
