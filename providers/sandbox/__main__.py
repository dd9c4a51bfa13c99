"""``python -m providers.sandbox [--host H] [--port P]``: the same as ``resolute sandbox``."""

from __future__ import annotations

import argparse

from . import DEFAULT_PORT, main

parser = argparse.ArgumentParser(prog="python -m providers.sandbox", description=__doc__)
parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="first port (0: any free ports)")
args = parser.parse_args()
main(args.host, args.port)
