"""The webhook-ingest phase: signed PagerDuty v3 deliveries per second into the real
``resolute api`` server, and into a plain aiohttp handler with no database (the ceiling).

``python -m bench.phase ingest --db URL --runs 3000 --duplicates 300 --concurrency 16``
runs :func:`measure`, which starts, each in a process of its own:

- ``python -m orchestrator api bench.ingest:resolute_worker``: the server under test, one
  flow (the incident-shape flow) triggered by a webhook with ``pagerduty_v3``
  verification, no worker (ingest only stores the delivery and starts its run);
- ``python -m bench.ingest plain``: the ceiling, an aiohttp handler that reads the body,
  verifies the same HMAC signature, parses the JSON and answers 202;
- ``python -m bench.ingest load``: the load generator, a keep-alive HTTP/1.1 client on
  ``--concurrency`` connections (raw asyncio streams, lighter than aiohttp's client, since
  it shares the machine's cores with what it measures).

Both servers get the same deliveries: distinct ~2 KB ``incident.triggered`` bodies, each
with its own ``X-Webhook-Id`` and a ``v1=`` HMAC-SHA256 signature, plus repeats of earlier
ones (same id and body, as PagerDuty retries), after a short warm-up. The Resolute
server is SIGKILLed as soon as the load ends, then the database must hold every delivery
answered 2xx, one run per delivery (its idempotency key and input the delivery's), and
no second run for a repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench import workload as w
from orchestrator import Worker, WorkerConfig, webhook
from orchestrator.verify import pagerduty_v3

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
ROUTE = "/hooks/pagerduty"
SECRET = "bench-ingest-signing-secret"
WARMUP = 100  # deliveries before the measured ones (connections, prepared statements)
HOST = "127.0.0.1"


# --- the servers ------------------------------------------------------------------------


def incident(payload: dict[str, Any]) -> str | None:
    """The correlation key: the incident's id."""
    data = payload.get("event", {}).get("data")
    found = data.get("id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


def resolute_worker() -> Worker:
    """``resolute api bench.ingest:resolute_worker``: the incident-shape flow behind a
    PagerDuty v3 webhook route (never run here: no worker process is started)."""
    from bench.engines.resolute_engine import flow

    trigger = webhook(ROUTE, verify=pagerduty_v3(SECRET), correlate=incident)
    return Worker(WorkerConfig(task_queue=w.QUEUE)).with_flow(flow().triggered_by(trigger))


def plain_app() -> web.Application:
    """The ceiling: read, verify, parse, 202. No database, no logging."""
    verifier = pagerduty_v3(SECRET)

    async def deliver(request: web.Request) -> web.Response:
        body = await request.read()
        if not verifier.verify(body, request.headers):
            return web.json_response({"error": "signature"}, status=401)
        payload = json.loads(body)
        if not isinstance(payload, dict):
            return web.json_response({"error": "not an object"}, status=400)
        delivery = request.headers.get("X-Webhook-Id")
        return web.json_response({"delivery": delivery, "duplicate": False}, status=202)

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "live"})

    app = web.Application()
    app.router.add_post(ROUTE, deliver)
    app.router.add_get("/health/live", live)
    return app


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU used so far by every PostgreSQL process on this machine (server-wide: other
    activity counts too; a backend that exits in between is missed)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            text = stat.read_text()
            if "(postgres)" in text:
                total += cpu_seconds(int(stat.parent.name))
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A server subprocess, awaited until its health route answers 200."""

    def __init__(self, name: str, port: int, db: str, pool: int) -> None:
        OUT.joinpath("logs").mkdir(parents=True, exist_ok=True)
        self.name, self.port = name, port
        self.log_path = OUT / "logs" / f"ingest-{name}.log"
        env = dict(os.environ)
        if name == "resolute":
            cmd = [sys.executable, "-m", "orchestrator", "api", "bench.ingest:resolute_worker"]
            cmd += ["--host", HOST, "--port", str(port)]
            self.health = "/health/ready"
            env |= {
                "RESOLUTE_DATABASE_URL": db,
                "RESOLUTE_POOL_SIZE": str(pool),
                "RESOLUTE_LOG_LEVEL": "WARNING",
            }
        else:
            cmd = [sys.executable, "-m", "bench.ingest", "plain", "--port", str(port)]
            self.health = "/health/live"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)

    async def serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://{HOST}:{self.port}{self.health}"
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.kill()
                    tail = self.log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{self.name} server did not start:\n{tail}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


# --- the deliveries and the load generator ----------------------------------------------


def deliveries(n: int, duplicates: int, start: int, prefix: str) -> list[tuple[str, bytes]]:
    """(delivery id, body) in sending order: ``n`` distinct bodies (``workload.payload``
    from index ``start``), and ``duplicates`` repeats of random earlier ones, each sent
    somewhere after its original (right after it, possibly while it is still in flight)."""
    rng = random.Random(7)
    originals = [(f"{prefix}-{i}", json.dumps(w.payload(start + i)).encode()) for i in range(n)]
    repeats: dict[int, list[int]] = defaultdict(list)  # position -> originals sent after it
    for i in rng.choices(range(n), k=duplicates) if n else ():
        repeats[rng.randrange(i, n)].append(i)
    out: list[tuple[str, bytes]] = []
    for pos in range(n):
        out.append(originals[pos])
        out.extend(originals[j] for j in repeats[pos])
    return out


def request(port: int, delivery: str, body: bytes) -> bytes:
    """The HTTP/1.1 request PagerDuty would send (keep-alive), signed."""
    signature = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        "User-Agent: PagerDuty-Webhook/V3.0\r\n"
        f"X-Webhook-Id: {delivery}\r\nX-PagerDuty-Signature: {signature}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep-alive) of one response."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = {}
    for line in head[1:]:
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip().lower()
    if "content-length" in fields:
        body = await reader.readexactly(int(fields["content-length"]))
    elif fields.get("transfer-encoding") == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size + 2))
        await reader.readuntil(b"\r\n")
        body = b"".join(c[:-2] for c in chunks)
    else:
        raise RuntimeError(f"a response without a length: {head[:3]}")
    return status, body, fields.get("connection") != "close"


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def load(args: argparse.Namespace) -> dict[str, Any]:
    """Send every delivery once, ``--concurrency`` connections each taking the next one
    as soon as its previous response is in. Times are from writing a request to having
    read its whole response."""
    work = deliveries(args.deliveries, args.duplicates, args.start, args.prefix)
    requests = [(d, request(args.port, d, body)) for d, body in work]
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    accepted: set[str] = set()
    duplicate_answers = 0
    queue = iter(requests)
    go = asyncio.Event()

    async def lane() -> None:
        nonlocal duplicate_answers
        reader, writer = await asyncio.open_connection(HOST, args.port)
        await go.wait()
        try:
            for delivery, req in queue:
                began = time.perf_counter()
                try:
                    writer.write(req)
                    status, body, keep = await _response(reader)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    statuses[type(exc).__name__] += 1
                    keep = False
                else:
                    latencies.append(time.perf_counter() - began)
                    statuses[str(status)] += 1
                    if 200 <= status < 300:
                        accepted.add(delivery)
                        duplicate_answers += b'"duplicate": true' in body
                if not keep:
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, args.port)
        finally:
            writer.close()

    lanes = [asyncio.create_task(lane()) for _ in range(args.concurrency)]
    await asyncio.sleep(0.2)  # every lane connected
    cpu, began = time.process_time(), time.perf_counter()
    go.set()
    async with asyncio.timeout(args.max_seconds):
        await asyncio.gather(*lanes)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    latencies.sort()
    return {
        "deliveries": len(requests),
        "distinct": args.deliveries,
        "duplicates": args.duplicates,
        "body_bytes": round(sum(len(b) for _, b in work) / max(1, len(work))),
        "connections": args.concurrency,
        "seconds": seconds,
        "deliveries_per_s": len(requests) / seconds,
        "p50_ms": 1000 * percentile(latencies, 0.50) if latencies else None,
        "p90_ms": 1000 * percentile(latencies, 0.90) if latencies else None,
        "p99_ms": 1000 * percentile(latencies, 0.99) if latencies else None,
        "max_ms": 1000 * latencies[-1] if latencies else None,
        "statuses": dict(statuses),
        "ok": sum(n for s, n in statuses.items() if s.startswith("2")),
        "accepted_distinct": len(accepted),
        "duplicate_answers": duplicate_answers,
        "loader_cpu_ms_per_delivery": 1000 * cpu / len(requests),
        "accepted": sorted(accepted),
    }


async def run_loader(
    port: int, n: int, duplicates: int, start: int, prefix: str, connections: int, ids: Path
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.ingest", "load", "--port", str(port)]
    cmd += ["--deliveries", str(n), "--duplicates", str(duplicates), "--start", str(start)]
    cmd += ["--prefix", prefix, "--concurrency", str(connections), "--ids-out", str(ids)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 400)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# --- the phase --------------------------------------------------------------------------


async def wal_lsn(db: str) -> str:
    conn = await asyncpg.connect(db)
    try:
        return await w.wal_lsn(conn)
    finally:
        await conn.close()


async def wal_bytes(db: str, since: str) -> int:
    conn = await asyncpg.connect(db)
    try:
        return await w.wal_bytes(conn, since)
    finally:
        await conn.close()


async def stored(db: str, accepted: set[str], duplicates_sent: int) -> dict[str, Any]:
    """What the database holds after the server's SIGKILL, against what was answered 2xx."""
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT delivery_id FROM webhook_deliveries WHERE verification <> 'failed'"
        )
        ids = {r["delivery_id"] for r in rows}
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM flow_runs) runs,
                      (SELECT count(*) FROM run_events WHERE type = 'run.started') started,
                      (SELECT count(*) FROM webhook_deliveries
                        WHERE verification = 'verified' AND cardinality(run_ids) = 1) one_run,
                      (SELECT count(*) FROM webhook_deliveries d JOIN flow_runs r
                          ON r.run_id = d.run_ids[1]
                         AND r.idempotency_key = 'webhook:' || d.route || ':' || d.delivery_id
                         AND r.input = d.body AND r.correlation_key = d.correlation_key
                         AND r.flow = $1) linked""",
            w.FLOW,
        )
    finally:
        await conn.close()
    assert row is not None
    return {
        "rows": len(ids),
        "accepted_not_stored": len(accepted - ids),
        "stored_not_accepted": len(ids - accepted),
        "runs": int(row["runs"]),
        "runs_started_events": int(row["started"]),
        "deliveries_with_one_run": int(row["one_run"]),
        "deliveries_linked_to_their_run": int(row["linked"]),
        # One flow on the route: one run per stored delivery, none for a repeat.
        "extra_runs": int(row["runs"]) - len(ids),
        "stored_ok": not (accepted - ids)
        and int(row["runs"]) == len(ids) == int(row["started"]) == int(row["linked"]),
    }


async def measure(
    db: str,
    n: int,
    duplicates: int,
    connections: int,
    pool: int,
    profile: str | None = None,
) -> dict[str, Any]:
    """The plain handler, then Resolute, with the same deliveries: {"plain": ..,
    "resolute": ..}."""
    from bench.phase import start_profiler

    results: dict[str, Any] = {}
    for name in ("plain", "resolute"):
        server = Server(name, free_port(), db, pool)
        ids = [OUT / f"ingest-{name}-{part}.ids" for part in ("warm", "measured")]
        profiler: subprocess.Popen[bytes] | None = None
        try:
            await server.serving()
            warm = await run_loader(server.port, WARMUP, 0, n, "warm", connections, ids[0])
            if profile and name == "resolute":
                profiler = start_profiler(server.proc.pid, profile)
                await asyncio.sleep(1.0)  # py-spy attached
            cpu, db_cpu, lsn = server.cpu_seconds(), postgres_cpu_seconds(), await wal_lsn(db)
            stats = await run_loader(server.port, n, duplicates, 0, "d", connections, ids[1])
            cpu, db_cpu = server.cpu_seconds() - cpu, postgres_cpu_seconds() - db_cpu
            wal = await wal_bytes(db, lsn)
        finally:
            if profiler is not None:
                profiler.send_signal(signal.SIGINT)
                profiler.wait(60)
            server.kill()  # SIGKILL: a 2xx must not depend on anything done after it
        stats["server_cpu_ms_per_delivery"] = 1000 * cpu / stats["deliveries"]
        stats["postgres_cpu_ms_per_delivery"] = 1000 * db_cpu / stats["deliveries"]
        stats["wal_per_delivery"] = wal / stats["deliveries"]
        stats["warmup_ok"] = warm["ok"]
        if name == "resolute":
            accepted = set().union(*(p.read_text().split() for p in ids))
            stats |= await stored(db, accepted, duplicates)
            stats["stored_ok"] = stats["stored_ok"] and stats["duplicate_answers"] == duplicates
        for p in ids:
            p.unlink(missing_ok=True)
        results[name] = stats
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    plain = sub.add_parser("plain", help="serve the ceiling handler")
    plain.add_argument("--port", type=int, required=True)
    gen = sub.add_parser("load", help="send the deliveries, print one JSON object")
    gen.add_argument("--port", type=int, required=True)
    gen.add_argument("--deliveries", type=int, default=3000, help="distinct deliveries")
    gen.add_argument("--duplicates", type=int, default=0, help="repeats of earlier ones")
    gen.add_argument("--start", type=int, default=0, help="payload index of the first")
    gen.add_argument("--prefix", default="d", help="of the X-Webhook-Id values")
    gen.add_argument("--concurrency", type=int, default=16, help="connections")
    gen.add_argument("--max-seconds", type=float, default=300.0)
    gen.add_argument("--ids-out", help="write the ids answered 2xx here, one a line")
    args = p.parse_args()
    if args.command == "plain":
        web.run_app(plain_app(), host=HOST, port=args.port, access_log=None, print=None)
    else:
        result = asyncio.run(load(args))
        if args.ids_out:
            Path(args.ids_out).write_text("".join(f"{d}\n" for d in result["accepted"]))
        del result["accepted"]
        print(json.dumps(result))


if __name__ == "__main__":
    main()
