"""Summarise py-spy raw (collapsed) stacks of a worker: where its CPU time goes.

``python -m bench.profile bench/out/profile.raw`` (the worker's; ``ingest-profile.raw``
is the HTTP server's). Four views: what the process was doing (each sample's first
matching activity), the leaf frame's library (self time by layer), Resolute functions
inclusive of what they call, and the hottest leaf frames. The phases record with
``--gil``, so samples add up to the process's CPU time.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.+?) \((?P<file>[^:()]+)(?::\d+)?\)$")
LAYERS = (
    ("orchestrator/", "resolute (orchestrator/)"),
    ("bench/", "benchmark nodes (bench/)"),
    ("sqlalchemy/", "sqlalchemy"),
    ("asyncpg/", "asyncpg"),
    ("pydantic", "pydantic"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("aiohttp/", "aiohttp"),
    ("apscheduler/", "apscheduler"),
    ("asyncio/", "asyncio"),
)


Frames = list[tuple[str, str]]


def _any(frames: Frames, *needles: str) -> bool:
    return any(n in f"{fn} ({file})" for fn, file in frames for n in needles)


# First match wins; the order puts the specific (connection set-up) before the general.
# SQLAlchemy runs each statement in a greenlet whose stack py-spy shows without the
# caller's frames, hence the catch-alls for sqlalchemy/ and asyncpg/.
ACTIVITIES: tuple[tuple[str, Callable[[Frames], bool]], ...] = (
    (
        "open/close database connections (connect, TLS probe, auth, type introspection)",
        lambda f: _any(
            f,
            "connect_utils.py",
            "_introspect_types",
            "close (asyncpg/connection.py)",
            "_inc_overflow",
        ),
    ),
    ("benchmark side effects (same in every engine)", lambda f: _any(f, "bench/workload.py")),
    ("append: executing the statement", lambda f: _any(f, "Store._exec")),
    ("append: building the statement (event_data, params)", lambda f: _any(f, "Store.append")),
    ("decide (interpreter, state copy, redaction)", lambda f: _any(f, "interpreter.py")),
    ("run a step (context, logger, validation, node)", lambda f: _any(f, "Worker._run_step")),
    # Worker._spawn, not "_spawn": SQLAlchemy's greenlet_spawn is on every statement's stack.
    ("claim, load and fold runs", lambda f: _any(f, "Store.claim", "Store.load", "Worker._spawn")),
    # The HTTP server (the ingest phase's profile).
    ("webhook: verify the signature (HMAC)", lambda f: _any(f, "orchestrator/verify.py")),
    (
        "webhook: record_delivery (parameters, JSON, statement)",
        lambda f: _any(f, "Store.record_delivery"),
    ),
    (
        "webhook: the handler (read, redact, parse, log, answer)",
        lambda f: _any(f, "orchestrator/webhooks.py"),
    ),
    ("heartbeat and lease recovery", lambda f: _any(f, "apscheduler/")),
    (
        "sqlalchemy in its greenlet (compile, params, checkout, result)",
        lambda f: _any(f, "sqlalchemy/"),
    ),
    ("asyncpg protocol (encode, decode, socket I/O)", lambda f: _any(f, "asyncpg/")),
    ("aiohttp: HTTP parsing, routing, writing", lambda f: _any(f, "aiohttp/")),
    ("rest of the worker loop (apply, wait, tasks)", lambda f: _any(f, "orchestrator/")),
)


def _activity(frames: Frames) -> str:
    return next(
        (name for name, match in ACTIVITIES if match(frames)), "event loop, GC, native frames"
    )


def _parse(line: str) -> tuple[Frames, int]:
    stack, _, count = line.rstrip().rpartition(" ")
    frames = []
    for raw in stack.split(";"):
        m = _FRAME.match(raw)
        frames.append((m["fn"], m["file"]) if m else (raw, ""))
    return frames, int(count)


def _layer(file: str) -> str:
    return next((name for key, name in LAYERS if key in file), "other (stdlib, C)")


def summarize(path: Path, top: int = 25) -> str:
    total = 0
    layers: Counter[str] = Counter()
    activities: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, n = _parse(line)
        total += n
        fn, file = frames[-1]
        layers[_layer(file)] += n
        activities[_activity(frames)] += n
        leaves[f"{fn} ({file})"] += n
        # Count each Resolute function once per sample, however deep it recurses.
        for name in {f"{f} ({p})" for f, p in frames if "orchestrator/" in p}:
            inclusive[name] += n

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [f"{total} samples", "", "activity (first match per sample):"]
    out += [f"  {pct(n)}  {name}" for name, n in activities.most_common()]
    out += ["", "self time by layer (leaf frame):"]
    out += [f"  {pct(n)}  {name}" for name, n in layers.most_common()]
    out += ["", f"Resolute functions, inclusive (top {top}):"]
    out += [f"  {pct(n)}  {name}" for name, n in inclusive.most_common(top)]
    out += ["", f"hottest leaf frames (top {top}):"]
    out += [f"  {pct(n)}  {name}" for name, n in leaves.most_common(top)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))
