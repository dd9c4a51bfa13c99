"""The benchmark suite: ``python -m bench.run [--quick] [--repeats N] ...`` (``make bench``).

Every phase of every engine runs in a fresh database and a process of its own
(``bench.phase``); engines take turns within each repeat so drifting load on the
shared machine spreads over all of them. Reports medians over repeats as a markdown
table with us/peer ratios, and writes ``bench/out/results.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import workload as w
from bench.engines import ENGINES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PEER_PACKAGES = {"dbos": ("dbos",), "absurd": ("absurd_sdk", "absurdctl")}
# Recovery variants: DBOS recovers only its own executor's workflows at launch (another
# executor's need DBOS Conductor or its admin API), so it has no "other worker" run.
RECOVERY = {"resolute": ("same", "other"), "dbos": ("same",), "absurd": ("same", "other")}

Results = dict[str, list[dict[str, Any]]]
# Counts, not rates: no us/peer ratio (0 / n means nothing).
COUNTS = ("duplicates", "lost", "sessions", "accepted_not_stored", "extra_runs")


def phase(name: str, db_name: str, args: argparse.Namespace, **opts: Any) -> dict[str, Any]:
    """Run one phase in a fresh database; its JSON result (or the error it died of).

    ``opts`` become command-line options of ``bench.phase`` (``runs=5`` -> ``--runs 5``,
    ``sequential=True`` -> ``--sequential``).
    """
    url = asyncio.run(w.recreate_database(args.server, db_name))
    flags: list[str] = []
    for key, value in {"pool": args.pool, "lease": args.lease, **opts}.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    began = time.monotonic()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.phase", name, "--db", url, *flags],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
        )
    finally:
        asyncio.run(w.drop_database(args.server, db_name))
    shown = " ".join(f for f in flags[4:] if f != "--profile" and not f.startswith("/"))
    print(f"  {name:<10} {shown:<58} {time.monotonic() - began:6.1f}s", flush=True)
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:]
        print(f"    failed: {tail}", flush=True)
        return {"error": tail[0] if tail else f"exit {out.returncode}"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def available(engine: str) -> str | None:
    """None when the engine can run here, else why not."""
    missing = [m for m in PEER_PACKAGES.get(engine, ()) if importlib.util.find_spec(m) is None]
    if missing:
        return f"not installed ({', '.join(missing)}); `pip install -e '.[bench]'`"
    return None


def measure(args: argparse.Namespace, engines: list[str]) -> Results:
    res: Results = defaultdict(list)
    conc = args.concurrency
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", flush=True)
        if "floor" in args.phases:
            res["floor/throughput"].append(
                phase("floor", f"bench_floor_t{r}", args, runs=args.runs, concurrency=conc)
            )
            res["floor/latency"].append(
                phase("floor", f"bench_floor_l{r}", args, runs=args.latency_runs, sequential=True)
            )
        for e in engines[r % len(engines) :] + engines[: r % len(engines)]:
            if "throughput" in args.phases:
                res[f"{e}/throughput"].append(
                    phase(
                        "throughput",
                        f"bench_{e}_t{r}",
                        args,
                        engine=e,
                        runs=args.runs,
                        concurrency=conc,
                    )
                )
            if "latency" in args.phases:
                res[f"{e}/latency"].append(
                    phase(
                        "latency",
                        f"bench_{e}_l{r}",
                        args,
                        engine=e,
                        runs=args.latency_runs,
                        concurrency=conc,
                    )
                )
            if "ingest" in args.phases and e == "resolute":
                ingest(res, args, f"bench_ingest_{r}")
            for mode in RECOVERY[e] if "recovery" in args.phases else ():
                res[f"{e}/recovery-{mode}"].append(
                    phase(
                        "recovery",
                        f"bench_{e}_r{r}",
                        args,
                        engine=e,
                        mode=mode,
                        runs=args.recovery_runs,
                    )
                )
    if "pgbench" in args.phases:
        for clients in (1, 16):
            res[f"pgbench/{clients}"].append(
                phase(
                    "pgbench",
                    "bench_pgbench",
                    args,
                    concurrency=clients,
                    seconds=args.pgbench_seconds,
                )
            )
    if "replay" in args.phases:
        res["resolute/replay"].append(
            phase("replay", "bench_replay", args, runs=args.replay_events)
        )
    if args.profile:
        res["resolute/profiled"].append(
            phase(
                "throughput",
                "bench_profile",
                args,
                engine="resolute",
                runs=args.runs,
                concurrency=conc,
                profile=OUT / "profile.raw",
            )
        )
        if "ingest" in args.phases:
            ingest(res, args, "bench_ingest_profile", OUT / "ingest-profile.raw")
    return res


def ingest(
    res: Results, args: argparse.Namespace, db_name: str, profile: Path | None = None
) -> None:
    """Webhook ingest: Resolute under ``resolute/ingest``, the plain aiohttp handler (the
    ceiling, no database) under ``floor/ingest``; a profiled run under ``*/ingest-profiled``."""
    out = phase(
        "ingest",
        db_name,
        args,
        runs=args.ingest_deliveries,
        duplicates=args.ingest_duplicates,
        concurrency=args.ingest_connections,
        **({"profile": profile} if profile else {}),
    )
    suffix = "-profiled" if profile else ""
    res[f"resolute/ingest{suffix}"].append(out.get("resolute", out))
    if "plain" in out:
        res[f"floor/ingest{suffix}"].append(out["plain"])


def median(res: Results, key: str, metric: str) -> float | None:
    """The median over repeats; for WAL the minimum, since other activity on the server
    can only add to a server-wide LSN diff."""
    xs: list[float] = [r[metric] for r in res.get(key, []) if metric in r]
    if not xs:
        return None
    return min(xs) if metric in ("wal_per_run", "wal_per_delivery") else statistics.median(xs)


def revision() -> str:
    """The commit under test, marked dirty when orchestrator/ has uncommitted changes."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "orchestrator", "migrations"],
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def table(res: Results, engines: list[str], skipped: dict[str, str]) -> str:
    peers = [e for e in engines if e != "resolute"]
    floor_p50 = median(res, "floor/latency", "p50_ms")
    # (label, phase key, metric, floor key, decimals); counts get no ratio (0 / n means
    # nothing), and per-step overhead is derived from the latency p50 and the floor's.
    specs: list[tuple[str, str, str, str | None, int]] = [
        ("throughput: runs/s (higher is better)", "throughput", "runs_per_s", "throughput", 1),
        ("throughput: steps/s", "throughput", "steps_per_s", "throughput", 0),
        ("latency: p50 end-to-end ms (lower is better)", "latency", "p50_ms", "latency", 1),
        ("latency: p99 end-to-end ms", "latency", "p99_ms", "latency", 1),
        ("latency: per-step overhead ms = (p50 - floor p50) / 9", "latency", "step_ms", None, 2),
    ]
    for mode, label in (("same", "same worker identity"), ("other", "different worker")):
        specs += [
            (f"recovery ({label}): s until all complete", f"recovery-{mode}", "seconds", None, 1),
            (f"recovery ({label}): duplicated side effects", f"recovery-{mode}", "duplicates",
             None, 0),
            (f"recovery ({label}): lost runs", f"recovery-{mode}", "lost", None, 0),
        ]  # fmt: skip
    specs += [
        ("db cost: rows inserted per run", "throughput", "ins_per_run", None, 1),
        ("db cost: rows updated per run", "throughput", "upd_per_run", None, 1),
        ("db cost: rows deleted per run", "throughput", "del_per_run", None, 1),
        (
            "db cost: WAL bytes per run (min over repeats)",
            "throughput",
            "wal_per_run",
            "throughput",
            0,
        ),
        ("worker CPU ms per run (user + system)", "throughput", "cpu_ms_per_run", "throughput", 1),
        ("connections opened in the throughput phase", "throughput", "sessions", None, 0),
        ("throughput phase: duplicated side effects", "throughput", "duplicates", None, 0),
        (
            "webhook ingest: deliveries/s (floor: plain aiohttp handler, no database)",
            "ingest",
            "deliveries_per_s",
            "ingest",
            0,
        ),
        ("webhook ingest: p50 ms", "ingest", "p50_ms", "ingest", 1),
        ("webhook ingest: p99 ms", "ingest", "p99_ms", "ingest", 1),
        ("webhook ingest: server CPU ms per delivery", "ingest", "server_cpu_ms_per_delivery",
         "ingest", 2),
        ("webhook ingest: PostgreSQL CPU ms per delivery (all its processes)", "ingest",
         "postgres_cpu_ms_per_delivery", None, 2),
        ("webhook ingest: WAL bytes per delivery (min over repeats)", "ingest",
         "wal_per_delivery", None, 0),
        ("webhook ingest: 2xx deliveries not in the database", "ingest", "accepted_not_stored",
         None, 0),
        ("webhook ingest: runs beyond one per delivery", "ingest", "extra_runs", None, 0),
    ]  # fmt: skip

    def value(engine: str, key: str, metric: str) -> float | None:
        if metric != "step_ms":
            return median(res, f"{engine}/{key}", metric)
        p50 = median(res, f"{engine}/latency", "p50_ms")
        if p50 is None or floor_p50 is None:
            return None
        return (p50 - floor_p50) / len(w.STEPS)

    head = ["metric", *engines, *(f"us/{p}" for p in peers), "no-engine floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, metric, floor_key, d in specs:
        values = {e: value(e, key, metric) for e in engines}
        ours = values.get("resolute")
        ratios = []
        for p in peers:
            theirs = values[p]
            countable = metric not in COUNTS
            ok = countable and ours is not None and theirs is not None and theirs > 0
            ratios.append(f"{ours / theirs:.2f}x" if ok else "")  # type: ignore[operator]
        floor = fmt(median(res, f"floor/{floor_key}", metric), d) if floor_key else ""
        cells = [label, *(fmt(values[e], d) for e in engines), *ratios, floor]
        lines.append("| " + " | ".join(cells) + " |")
    out = ["\n".join(lines), ""]
    pg = [f"{c} client(s): {fmt(median(res, f'pgbench/{c}', 'tps'), 0)} tps" for c in (1, 16)]
    out.append("pgbench commit ceiling (one side-effect row per transaction): " + "; ".join(pg))
    replay = res.get("resolute/replay", [{}])[0]
    if "load_ms" in replay:
        out.append(
            f"replay of {replay['events']:,} events ({replay['log_bytes'] / 1e6:.1f} MB of log): "
            f"load {replay['load_ms']:.0f} ms (SQL + parsing), fold {replay['fold_ms']:.1f} ms, "
            f"decide {replay['decide_ms']:.1f} ms"
        )
    out += ingest_summary(res)
    out += [f"{e}: skipped, {why}" for e, why in skipped.items()]
    out += [f"error in {k}: {r['error']}" for k, rs in res.items() for r in rs if "error" in r]
    return "\n".join(out) + "\n"


def ingest_summary(res: Results) -> list[str]:
    """The ingest rows in a sentence: the ratio to the ceiling and the durability check."""
    ours = [r for r in res.get("resolute/ingest", []) if "deliveries_per_s" in r]
    if not ours:
        return []
    rate, ceiling = (
        median(res, "resolute/ingest", "deliveries_per_s"),
        median(res, "floor/ingest", "deliveries_per_s"),
    )
    share = f" = {100 * rate / ceiling:.0f}% of" if rate and ceiling else ", ceiling"
    first = ours[0]
    stored = sum(1 for r in ours if r.get("stored_ok"))
    return [
        f"webhook ingest ({first['distinct']:,} distinct signed PagerDuty v3 deliveries of "
        f"{first['body_bytes']:,} B + {first['duplicates']:,} repeats, "
        f"{first['connections']} connections): {fmt(rate, 0)} deliveries/s{share} the plain "
        f"aiohttp handler's {fmt(ceiling, 0)}; every 2xx in the database with exactly one run "
        f"and every repeat answered as a duplicate in {stored} of {len(ours)} repeat(s)"
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smoke run, under two minutes")
    p.add_argument("--repeats", type=int, help="default 3 (quick: 1)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument(
        "--phases",
        default="floor,throughput,latency,recovery,pgbench,replay,ingest",
        help="comma-separated subset",
    )
    p.add_argument("--runs", type=int, help="throughput runs (default 2000, quick 200)")
    p.add_argument("--latency-runs", type=int, help="sequential runs (default 200, quick 30)")
    p.add_argument("--recovery-runs", type=int, help="runs in flight at the kill (300, quick 100)")
    p.add_argument("--replay-events", type=int, default=10_000)
    p.add_argument("--ingest-deliveries", type=int, help="distinct (default 3000, quick 1000)")
    p.add_argument("--ingest-duplicates", type=int, help="repeated deliveries (default 10%%)")
    p.add_argument("--ingest-connections", type=int, default=16, help="load generator's")
    p.add_argument("--concurrency", type=int, default=100, help="runs in flight per worker")
    p.add_argument("--pool", type=int, default=10, help="database connections per worker")
    p.add_argument("--lease", type=float, help="lease / claim timeout s (default 10, quick 5)")
    p.add_argument("--pgbench-seconds", type=int, help="default 10 (quick 3)")
    p.add_argument("--profile", action="store_true", help="extra py-spy-profiled Resolute run")
    p.add_argument(
        "--server",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="PostgreSQL to CREATE DATABASE bench_* on (env BENCH_DATABASE_URL)",
    )
    args = p.parse_args()
    q = args.quick
    args.repeats = args.repeats or (1 if q else 3)
    args.runs = args.runs or (200 if q else 2000)
    args.latency_runs = args.latency_runs or (30 if q else 200)
    args.recovery_runs = args.recovery_runs or (100 if q else 300)
    args.lease = args.lease or (5.0 if q else 10.0)
    args.pgbench_seconds = args.pgbench_seconds or (3 if q else 10)
    args.ingest_deliveries = args.ingest_deliveries or (1000 if q else 3000)
    if args.ingest_duplicates is None:
        args.ingest_duplicates = args.ingest_deliveries // 10
    args.phases = set(args.phases.split(","))

    skipped = {e: why for e in args.engines.split(",") if (why := available(e))}
    engines = [e for e in args.engines.split(",") if e not in skipped]
    began, rev = datetime.now(UTC), revision()
    res = measure(args, engines)
    if revision() != rev:
        rev += f" (changed to {revision()} during the run: results mix versions)"
    report = (
        f"{began:%Y-%m-%d %H:%M} UTC, resolute {rev}, {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; repeats={args.repeats}, runs={args.runs}, "
        f"latency runs={args.latency_runs}, recovery runs={args.recovery_runs}, "
        f"concurrency={args.concurrency}, pool={args.pool}, lease={args.lease:g}s\n\n"
        + table(res, engines, skipped)
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(res, indent=1))
    (OUT / "results.md").write_text(report)
    if args.profile:
        from bench.profile import summarize

        (OUT / "profile.txt").write_text(summarize(OUT / "profile.raw"))
        report += f"\nprofile of the worker: {OUT / 'profile.txt'}\n"
        if "ingest" in args.phases and (OUT / "ingest-profile.raw").exists():
            (OUT / "ingest-profile.txt").write_text(summarize(OUT / "ingest-profile.raw"))
            report += f"profile of the ingest server: {OUT / 'ingest-profile.txt'}\n"
    print("\n" + report)


if __name__ == "__main__":
    main()
