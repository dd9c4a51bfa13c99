"""One measured phase, in a process of its own: ``python -m bench.phase PHASE ...``.

Prints one JSON object on stdout. The phase starts its worker subprocess(es), drives
runs through the engine's client, and reads every number back from the database.
Every wait is bounded by a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench import workload as w
from bench.engines import Driver, Span, driver

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"


class WorkerProc:
    """A worker subprocess: started, awaited until serving, stopped or SIGKILLed."""

    def __init__(
        self,
        engine: str,
        url: str,
        worker_id: str,
        args: argparse.Namespace,
        concurrency: int,
        diag_sleep: float = 0.0,
    ) -> None:
        OUT.joinpath("logs").mkdir(parents=True, exist_ok=True)
        self.ready = OUT / f"ready-{uuid.uuid4().hex}"
        self.log_path = OUT / "logs" / f"{engine}-{args.phase}-{worker_id}.log"
        env = dict(os.environ, BENCH_DIAG_SLEEP=str(diag_sleep))
        cmd = [sys.executable, "-m", "bench.worker", engine, "--db", url]
        cmd += ["--worker-id", worker_id, "--concurrency", str(concurrency)]
        cmd += ["--pool", str(args.pool), "--lease", str(args.lease), "--ready", str(self.ready)]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)

    async def serving(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"worker did not start; log {self.log_path}:\n{tail}")
            await asyncio.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU the worker process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.ready.unlink(missing_ok=True)

    def stop(self, grace: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        self.kill()


def start_profiler(pid: int, output: str) -> subprocess.Popen[bytes]:
    """py-spy sampling the worker until SIGINT, as raw stacks. ``--gil`` keeps only
    samples where the thread holds the GIL, so they add up to CPU time rather than
    wall time (py-spy's idle detection counts time in socket writes as busy)."""
    py_spy = str(Path(sys.executable).parent / "py-spy")
    cmd = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", "200"]
    cmd += ["--gil", "--duration", "600", "--output", output]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def until(
    probe: Callable[[], Awaitable[bool]], timeout: float, what: str, every: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g}s waiting for {what}")
        await asyncio.sleep(every)


async def start_all(d: Driver, runs: int, starters: int) -> None:
    """Start ``runs`` runs as fast as ``starters`` concurrent clients allow."""
    queue = iter(range(runs))

    async def starter() -> None:
        for i in queue:
            await d.start(w.payload(i))

    await asyncio.gather(*(starter() for _ in range(starters)))


def percentile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- engine phases ----------------------------------------------------------------------


async def throughput(args: argparse.Namespace) -> dict[str, Any]:
    runs = int(args.runs)
    d = driver(args.engine)
    await d.prepare(args.db)
    worker = WorkerProc(args.engine, args.db, "bench-1", args, args.concurrency)
    profiler: subprocess.Popen[bytes] | None = None
    conn = await asyncpg.connect(args.db)
    try:
        await worker.serving()
        if args.profile:
            profiler = start_profiler(worker.proc.pid, args.profile)
        await d.open(args.db, args.starters)
        before, lsn = await w.tuple_counts(conn), await w.wal_lsn(conn)
        sessions, cpu = await w.sessions(conn), worker.cpu_seconds()
        await start_all(d, runs, args.starters)
        span = Span(0, None, None)

        async def done() -> bool:
            nonlocal span
            span = await d.span(conn)
            return span.completed >= runs

        await until(done, args.timeout, f"{runs} runs to complete", every=0.2)
        wal, cpu = await w.wal_bytes(conn, lsn), worker.cpu_seconds() - cpu
        await d.close()
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        worker.stop()
        # Backends flush their table statistics when they exit.
        await asyncio.sleep(1.0)
        after = await w.tuple_counts(conn)
        return {
            "runs": runs,
            "seconds": span.seconds,
            "runs_per_s": runs / span.seconds,
            "steps_per_s": len(w.STEPS) * runs / span.seconds,
            "wal_per_run": wal / runs,
            **{f"{k}_per_run": (after[k] - before[k]) / runs for k in after},
            "cpu_ms_per_run": 1000 * cpu / runs,
            "sessions": await w.sessions(conn) - sessions,
            "duplicates": await w.duplicates(conn),
        }
    finally:
        worker.kill()
        await conn.close()


async def latency(args: argparse.Namespace) -> dict[str, Any]:
    d = driver(args.engine)
    await d.prepare(args.db)
    worker = WorkerProc(args.engine, args.db, "bench-1", args, args.concurrency)
    conn = await asyncpg.connect(args.db)
    try:
        await worker.serving()
        await d.open(args.db, 1)
        for i in range(args.runs):
            await d.start(w.payload(i))

            async def done(n: int = i + 1) -> bool:
                return (await d.span(conn)).completed >= n

            await until(done, 30, f"run {i} to complete", every=0.002)
        await d.close()
        worker.stop()
        return summarize_latencies(await d.latencies(conn))
    finally:
        worker.kill()
        await conn.close()


def summarize_latencies(xs: list[float]) -> dict[str, Any]:
    return {
        "runs": len(xs),
        "p50_ms": 1000 * statistics.median(xs),
        "p99_ms": 1000 * percentile(xs, 0.99),
    }


async def recovery(args: argparse.Namespace) -> dict[str, Any]:
    """300 runs parked in a 3 s run_diagnostics, SIGKILL, then a fresh worker."""
    runs = int(args.runs)
    d = driver(args.engine)
    await d.prepare(args.db)
    first = WorkerProc(args.engine, args.db, "bench-1", args, runs, diag_sleep=3.0)
    second: WorkerProc | None = None
    conn = await asyncpg.connect(args.db)
    try:
        await first.serving()
        await d.open(args.db, args.starters)
        await start_all(d, runs, args.starters)

        async def parked() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM bench.side_effects WHERE step = 'notify_chat'"
            )
            return int(n) >= runs

        await until(parked, 60, "every run to reach run_diagnostics", every=0.02)
        first.kill()
        in_flight = runs - (await d.span(conn)).completed
        diag_done = await conn.fetchval(
            "SELECT count(*) FROM bench.side_effects WHERE step = 'run_diagnostics'"
        )
        began = time.monotonic()
        worker_id = "bench-1" if args.mode == "same" else "bench-2"
        second = WorkerProc(args.engine, args.db, worker_id, args, runs)
        span = Span(0, None, None)

        async def done() -> bool:
            nonlocal span
            span = await d.span(conn)
            return span.completed >= runs

        with contextlib.suppress(TimeoutError):  # what did not complete is reported lost
            await until(done, args.lease + args.timeout, "recovered runs to complete", 0.05)
        seconds = time.monotonic() - began
        await d.close()
        second.stop()
        return {
            "runs": runs,
            "in_flight_at_kill": in_flight,
            "diagnostics_done_at_kill": int(diag_done),
            "seconds": seconds,
            "duplicates": await w.duplicates(conn),
            "lost": runs - span.completed,
        }
    finally:
        first.kill()
        if second is not None:
            second.kill()
        await conn.close()


# --- no engine --------------------------------------------------------------------------


async def floor_run(pool: asyncpg.Pool) -> None:
    """The nine side-effect commits of one run, with the same parallel block."""
    run_id = str(uuid.uuid4())
    await w.effect(pool, run_id, "parse")
    await asyncio.gather(*(w.effect(pool, run_id, step) for step in w.STEPS[1:4]))
    for step in w.STEPS[4:]:
        await w.effect(pool, run_id, step)


async def floor(args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(args.db)
    pool = await w.effects_pool(args.db, args.pool)
    try:
        lsn, cpu = await w.wal_lsn(conn), time.process_time()
        if args.sequential:
            for _ in range(args.runs):
                await floor_run(pool)
        else:
            gate = asyncio.Semaphore(args.concurrency)

            async def one() -> None:
                async with gate:
                    await floor_run(pool)

            await asyncio.gather(*(one() for _ in range(args.runs)))
        wal, cpu = await w.wal_bytes(conn, lsn), time.process_time() - cpu
        rows = await conn.fetch(
            "SELECT extract(epoch FROM max(at) - min(at))::float8 s FROM bench.side_effects"
            " GROUP BY run_id"
        )
        if args.sequential:
            return summarize_latencies([r["s"] for r in rows])
        seconds = float(
            await conn.fetchval(
                "SELECT extract(epoch FROM max(at) - min(at))::float8 FROM bench.side_effects"
            )
        )
        return {
            "runs": args.runs,
            "seconds": seconds,
            "runs_per_s": args.runs / seconds,
            "steps_per_s": len(w.STEPS) * args.runs / seconds,
            "wal_per_run": wal / args.runs,
            "cpu_ms_per_run": 1000 * cpu / args.runs,
        }
    finally:
        await pool.close()
        await conn.close()


PGBENCH_SCRIPT = """\\set r random(1, 2000000000)
INSERT INTO bench.side_effects (run_id, step) VALUES ('pgb-' || :client_id || '-' || :r, 'parse')
ON CONFLICT (run_id, step) DO UPDATE SET n = bench.side_effects.n + 1;
"""


async def pgbench(args: argparse.Namespace) -> dict[str, Any]:
    """The machine's commit ceiling: one side-effect row per autocommit transaction."""
    script = OUT / "pgbench-insert.sql"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(PGBENCH_SCRIPT)
    binary = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    cmd = [binary, "-n", "-c", str(args.concurrency), "-j", str(min(args.concurrency, 2))]
    cmd += ["-T", str(args.seconds), "-f", str(script), args.db]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    output = (await asyncio.wait_for(proc.communicate(), args.seconds + 60))[0].decode()
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", output)
    if match is None:
        raise RuntimeError(f"pgbench failed: {output}")
    return {"clients": args.concurrency, "tps": float(match.group(1))}


async def replay(args: argparse.Namespace) -> dict[str, Any]:
    from bench.replay import measure

    return await measure(args.db, args.runs, repeats=5)


async def ingest(args: argparse.Namespace) -> dict[str, Any]:
    """Webhook ingest, Resolute and the plain-handler ceiling side by side (bench/ingest.py):
    ``--runs`` distinct deliveries, ``--duplicates`` repeats, ``--concurrency`` connections."""
    from bench.ingest import measure

    return await measure(
        args.db, args.runs, args.duplicates, args.concurrency, args.pool, args.profile
    )


PHASES = {
    "throughput": throughput,
    "latency": latency,
    "recovery": recovery,
    "floor": floor,
    "pgbench": pgbench,
    "replay": replay,
    "ingest": ingest,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("phase", choices=PHASES)
    p.add_argument("--engine", default="resolute")
    p.add_argument("--db", required=True)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--pool", type=int, default=10)
    p.add_argument("--starters", type=int, default=8)
    p.add_argument("--lease", type=float, default=10.0)
    p.add_argument("--mode", choices=("same", "other"), default="same")
    p.add_argument("--sequential", action="store_true", help="floor: one run at a time")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--seconds", type=int, default=10, help="pgbench: duration")
    p.add_argument("--duplicates", type=int, default=0, help="ingest: repeated deliveries")
    p.add_argument("--profile", help="throughput, ingest: py-spy raw stacks to this file")
    args = p.parse_args()
    print(json.dumps(asyncio.run(PHASES[args.phase](args))))


if __name__ == "__main__":
    main()
