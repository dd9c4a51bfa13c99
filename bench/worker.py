"""Worker subprocess entry point: ``python -m bench.worker ENGINE --db URL ...``.

Each measured phase runs its engine's worker here, in a process of its own, so the
harness can SIGKILL it and no state leaks between phases or engines.
"""

from __future__ import annotations

import argparse
import logging

from bench.engines import ENGINES, ServeOptions, serve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("engine", choices=ENGINES)
    p.add_argument("--db", required=True)
    p.add_argument("--worker-id", default="bench-1")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--pool", type=int, default=10)
    p.add_argument("--lease", type=float, default=10.0)
    p.add_argument("--ready", required=True, help="file touched once the worker is serving")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    serve(args.engine, ServeOptions.from_args(args))


if __name__ == "__main__":
    main()
