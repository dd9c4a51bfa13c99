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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from . import events as ev
from . import metrics
from .appender import Appender
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
from .interpreter import Decision, Execute, InboxSignal, check_compatible, decide
from .logs import logger_for
from .node import Provider, StepContext
from .sql import CANCEL_CHANNEL, NOTIFY_CHANNEL, SIGNAL_CHANNEL
from .state import FlowState, RunState, fold
from .store import Boundary, Claim, Projection, Store
from .triggers import ScheduleTrigger, SignalTrigger, WebhookTrigger

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
    schedules: bool = True  # fire the flows' cron triggers from this process

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
    signal_version: int  # flow_runs.signal_version as last read (claim or inbox)
    tasks: dict[str, asyncio.Task[ev.Event]] = field(default_factory=dict)
    finished: list[tuple[str, asyncio.Task[ev.Event]]] = field(default_factory=list)
    poke: asyncio.Event = field(default_factory=asyncio.Event)  # a step ended or a signal came

    def step_done(self, path: str, task: asyncio.Task[ev.Event]) -> None:
        self.finished.append((path, task))
        self.poke.set()


class Worker:
    def __init__(self, config: WorkerConfig | None = None) -> None:
        self.config = config or WorkerConfig()
        self.worker_id = self.config.identity()
        self.flows: dict[str, FlowDefinition] = {}
        self.providers: tuple[Provider, ...] = ()
        self.store: Store | None = None
        self.database_url: str | None = None
        self._drivers: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, _Driver] = {}
        self._chores: set[asyncio.Task[None]] = set()
        self._runtime: _StepRuntime | None = None
        self._appender: Appender | None = None
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._claimer: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self._log = logger_for("resolute.worker", worker_id=self.worker_id)
        self._refill = max(1, min(self.config.claim_batch, self.config.max_concurrent // 10))

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

    async def register_flows(self, store: Store) -> None:
        """Make this worker's flows known to the database (clients start runs by name)."""
        for d in self.flows.values():
            await store.register_flow(d.name, self.queue_of(d), d.fingerprint, _shape(d))

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
        # The hot path's connections: the appender's two statements in flight and the
        # claim loop's. They hold no session state, so no reset round trip on release.
        pool = await asyncpg.create_pool(asyncpg_dsn(url), min_size=1, max_size=3, reset=_no_reset)
        self.store = Store(engine, pool)
        self._runtime = _StepRuntime(self.store)
        self._appender = Appender(self.store, self.worker_id)
        await self.register_flows(self.store)
        await self.store.heartbeat(self.worker_id, self._queues())
        self._stopping.clear()
        await self._listen(url)
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.add_job(
            self._heartbeat, "interval", seconds=self.config.heartbeat_seconds, max_instances=1
        )
        # Often enough that a dead worker's runs move within about a second of its
        # lease expiring; the query only reads leased rows.
        self._scheduler.add_job(
            self._recover,
            "interval",
            seconds=min(1.0, self.config.lease_seconds / 3),
            max_instances=1,
        )
        for d in self.flows.values():
            for t in d.triggers:
                if isinstance(t, ScheduleTrigger) and self.config.schedules:
                    self._scheduler.add_job(
                        self._fire_schedule,
                        CronTrigger.from_crontab(t.cron, timezone=t.timezone),
                        args=[d.name, t],
                        misfire_grace_time=30,
                        coalesce=True,
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
        for chore in list(self._chores):  # release_all below hands back what they held
            chore.cancel()
        if self._appender is not None:  # let boundaries in flight land before release_all
            await self._appender.drain()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                released = await self.store.release_all(self.worker_id)
                if released:
                    self._log.info("handed back %d runs", released)
            if self.store.pool is not None:
                await self.store.pool.close()
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
            await self._listener.add_listener(SIGNAL_CHANNEL, self._on_signal)
        except (OSError, asyncpg.PostgresError) as exc:
            self._log.warning("LISTEN unavailable (%s); polling only", exc)

    def _on_notify(self, *args: Any) -> None:
        self._wakeup.set()

    def _on_cancel(self, _conn: Any, _pid: int, _channel: str, run_id: str) -> None:
        task = self._drivers.get(run_id)
        if task is not None:
            task.cancel()

    def _on_signal(self, _conn: Any, _pid: int, _channel: str, target: str) -> None:
        """Poke runs in memory that may be waiting for this signal."""
        key = target[4:] if target.startswith("key:") else None
        for d in self._live.values():
            st = d.state
            if d.claim.run_id == target or (
                key is not None
                and (
                    st.correlation_key == key
                    or any(w.correlation_key == key for w in st.waits.values())
                )
            ):
                d.poke.set()

    async def _fire_schedule(self, flow: str, trigger: ScheduleTrigger) -> None:
        """One run per fire, however many replicas fire: the key names the minute."""
        assert self.store is not None
        fire = datetime.now(ZoneInfo(trigger.timezone)).replace(second=0, microsecond=0)
        at = fire.astimezone(UTC).isoformat()
        try:
            run_id, created = await self.store.start_run(
                flow,
                {"scheduled_at": at, "cron": trigger.cron},
                idempotency_key=f"schedule:{flow}:{at}",
                trigger="schedule",
            )
        except Exception as exc:
            self._log.warning("scheduled start of %s at %s failed: %s", flow, at, exc)
            return
        if created:
            self._log.info("schedule started %s run %s for %s", flow, run_id, at)

    async def _heartbeat(self) -> None:
        assert self.store is not None and self.database_url is not None
        try:
            await self.store.heartbeat(self.worker_id, self._queues())
        except Exception as exc:
            self._log.warning("heartbeat failed: %s", exc)
            return
        if self._listener is None or self._listener.is_closed():
            await self._listen(self.database_url)  # the database restarted: listen again

    async def _recover(self) -> None:
        assert self.store is not None
        try:
            recovered = await self.store.recover_expired(self.config.lease_seconds)
        except Exception as exc:
            self._log.warning("lease recovery failed: %s", exc)
            return
        if recovered:
            metrics.LEASE_TAKEOVERS.inc(len(recovered))
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
            # A busy worker refills in batches (a tenth of its slots), not one claim
            # statement per run that ends.
            if free >= (self._refill if self._drivers else 1):
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
        try:
            logs = await self.store.load([c.run_id for c in claims])
        except Exception:
            # Claimed but not loaded: hand them back, or they would wait for a restart.
            for c in claims:
                self._background(self._hand_back(c, self._log))
            raise
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
        d = _Driver(claim, definition, state, claim.last_seq, claim.signal_version)
        self._live[claim.run_id] = d
        previous = log_events[-1].worker_id if log_events else None
        try:
            await self._loop(d, rlog, previous)
        except LeaseLostError:
            rlog.warning("lease lost; another writer owns this run now")
        except asyncio.CancelledError:
            rlog.info("stopped driving (cancelled or shutting down)")
        except Exception:
            # Most likely the database went away mid-append. This worker still holds
            # the lease (its heartbeat lives on), so hand the run back or nobody would.
            rlog.exception("driving the run failed; handing it back to be replayed")
            self._background(self._hand_back(claim, rlog))
        finally:
            self._live.pop(claim.run_id, None)
            for task in d.tasks.values():
                task.cancel()
            if d.tasks:
                await asyncio.gather(*d.tasks.values(), return_exceptions=True)

    async def _hand_back(self, claim: Claim, rlog: logging.LoggerAdapter[logging.Logger]) -> None:
        assert self.store is not None
        delay = 0.5
        while not self._stopping.is_set():
            try:
                await self.store.release(claim.run_id, claim.lease_token, "running", None)
            except LeaseLostError:
                return  # someone else has it already
            except Exception as exc:
                rlog.warning("cannot hand the run back yet (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                self._wakeup.set()
                return

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _loop(
        self, d: _Driver, rlog: logging.LoggerAdapter[logging.Logger], previous: str | None
    ) -> None:
        try:
            check_compatible(d.definition, d.state)
        except FlowMismatchError as exc:
            rlog.error("%s", exc)
            failed = ev.RunFailed(error=str(exc))
            await self._append(d, [failed], Projection("failed", error=str(exc)))
            metrics.RUNS_ENDED.labels(d.definition.name, "failed").inc()
            return
        outcomes: list[ev.Event] = []
        resumed = None
        last = d.state.last_event
        if (d.seq > 1 or d.claim.prior_status != "pending") and last != "run.resumed":
            resumed = self._resumed(d, previous)
            d.state.apply(resumed)
        while True:
            now = _now()
            for e in outcomes:
                d.state.apply(e)
            decision = await self._decide(d, now)
            # A wake-up that changes nothing (an unrelated signal, an early timer) leaves
            # no trace: the run.resumed goes out only with something it led to.
            batch = outcomes + decision.events
            if resumed is not None and decision.events:
                batch.insert(0, resumed)
            resumed, outcomes = None, []
            cancelled = {
                e.node_path
                for e in decision.events
                if isinstance(e, ev.StepCancelled) and e.node_path is not None
            }
            in_flight = (set(d.tasks) - cancelled) | {x.step.path for x in decision.execute}
            hold = (
                not self._stopping.is_set()
                and decision.wake_at is not None
                and (decision.wake_at - now).total_seconds() <= self.config.hold_seconds
            )
            projection = _projection(decision, bool(in_flight), hold)
            if batch:
                await self._append(d, batch, projection)
            elif projection.release:
                assert self.store is not None
                await self.store.release(
                    d.claim.run_id,
                    d.claim.lease_token,
                    projection.status,
                    projection.wake_at,
                    d.signal_version,
                )
            d.state = decision.state or d.state
            for path in cancelled:
                if (task := d.tasks.pop(path, None)) is not None:
                    task.cancel()
            for job in decision.execute:
                task = asyncio.create_task(self._run_step(d, job))
                task.add_done_callback(functools.partial(d.step_done, job.step.path))
                d.tasks[job.step.path] = task
            if d.state.terminal:
                rlog.info("run %s", d.state.status)
                metrics.RUNS_ENDED.labels(d.definition.name, d.state.status).inc()
                return
            if projection.release:
                return
            outcomes = await self._next_outcomes(d, decision.wake_at)
            if self._stopping.is_set() and outcomes:
                # Record what finished and hand the run back; the next owner continues it.
                for e in outcomes:
                    d.state.apply(e)
                st = d.state
                projection = Projection(st.phase, wake_at=st.next_wake(), release=not d.tasks)
                await self._append(d, outcomes, projection)
                outcomes = []
                if not d.tasks:
                    return

    async def _next_outcomes(self, d: _Driver, wake_at: datetime | None) -> list[ev.Event]:
        """Wait for steps to finish, the next wake-up time, or a signal for this run."""
        if not d.poke.is_set():
            if wake_at is None:
                await d.poke.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, (wake_at - _now()).total_seconds())):
                        await d.poke.wait()
        d.poke.clear()
        outcomes = []
        for path, task in d.finished:
            if d.tasks.get(path) is task:  # not a task cancelled since
                del d.tasks[path]
                outcomes.append(task.result())
        d.finished.clear()
        return outcomes

    async def _decide(self, d: _Driver, now: datetime) -> Decision:
        """``decide``, consulting the signal inbox when the run waits for a signal: before
        deciding, so a signal that came in time wins over the timeout, and again after a
        pass that opened a wait, for the signals kept from before it."""
        inbox = await self._inbox(d, d.state)
        decision = decide(d.definition, d.state, now, inbox)
        st = decision.state
        assert st is not None
        if st.terminal or not any(isinstance(e, ev.SignalWaiting) for e in decision.events):
            return decision
        inbox = await self._inbox(d, st)
        if not inbox:
            return decision
        more = decide(d.definition, st, now, inbox)
        return Decision(
            events=decision.events + more.events,
            execute=decision.execute + more.execute,
            wake_at=more.wake_at,
            state=more.state,
        )

    async def _inbox(self, d: _Driver, st: RunState) -> list[InboxSignal]:
        """The unconsumed signals the run's open waits may take (none: no query)."""
        open_waits = [w for w in st.waits.values() if not w.done]
        if not open_waits:
            return []
        assert self.store is not None
        keys = {w.correlation_key or st.correlation_key for w in open_waits}
        d.signal_version, inbox = await self.store.inbox(
            d.claim.run_id,
            sorted(k for k in keys if k),
            sorted({w.name for w in open_waits}),
            [s.signal_id for s in st.signals if s.signal_id is not None],
        )
        return inbox

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
        assert self._appender is not None
        claim = d.claim
        await self._appender.append(
            Boundary(claim.run_id, claim.lease_token, d.seq, batch, projection, d.signal_version)
        )
        d.seq += len(batch)

    async def _run_step(self, d: _Driver, job: Execute) -> ev.Event:
        step: NodeStep = job.step
        ctx = StepContext(
            run_id=d.claim.run_id,
            flow=d.definition.name,
            step=step.alias,
            node_path=step.path,
            attempt=job.attempt,
            state=FlowState(d.state, d.definition),
            providers=self.providers,
            runtime=self._runtime,
        )
        rec = d.state.steps.get(step.path)
        outcome = await execute(job, ctx, rec.failures if rec else 0)
        metrics.observe_step(d.definition.name, outcome)
        return outcome


class _StepRuntime:
    """The engine as a running step sees it (``ctx.emit_signal``, ``ctx.correlated``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def send_signal(
        self,
        name: str,
        payload: Any,
        *,
        run_id: str | None,
        correlation_key: str | None,
        idempotency_key: str,
        sent_by: str,
    ) -> int:
        sent = await self.store.send_signal(
            name,
            payload,
            run_id=run_id,
            correlation_key=correlation_key,
            idempotency_key=idempotency_key,
            sent_by=sent_by,
        )
        return sent.signal_id

    async def recorded_output(
        self, correlation_key: str, alias: str, flow: str | None, exclude_run: str
    ) -> tuple[bool, Any]:
        return await self.store.recorded_output(correlation_key, alias, flow, exclude_run)


async def _no_reset(_conn: asyncpg.Connection) -> None:
    return None


def _projection(decision: Decision, in_flight: bool, hold: bool) -> Projection:
    """``flow_runs`` after this boundary; a run with nothing in flight leaves memory
    unless it wakes again within ``hold_seconds``."""
    st = decision.state
    assert st is not None
    if st.terminal:
        return Projection(st.status, result=st.result, error=st.error, release=True)
    return Projection(st.phase, wake_at=decision.wake_at, release=not (in_flight or hold))


def _shape(definition: FlowDefinition) -> dict[str, Any]:
    """What ``flows.shape`` records: the steps and the triggers (signal triggers are
    looked up there when a signal is sent)."""
    steps = [
        {
            "path": s.path,
            "kind": s.kind,
            "alias": s.alias,
            "node": s.node.name if isinstance(s, NodeStep) else None,
        }
        for s in definition.index.values()
    ]
    triggers: list[dict[str, Any]] = []
    for t in definition.triggers:
        if isinstance(t, WebhookTrigger):
            triggers.append({"kind": t.kind, "path": t.path})
        elif isinstance(t, ScheduleTrigger):
            triggers.append({"kind": t.kind, "cron": t.cron, "timezone": t.timezone})
        elif isinstance(t, SignalTrigger):
            triggers.append({"kind": t.kind, "name": t.name})
        else:
            triggers.append({"kind": t.kind})
    return {"steps": steps, "triggers": triggers}
