"""Generate client/gradserve_client/client.py (the synchronous `Client`) from aio.py.

The client methods are defined once, in aio.py, as coroutines; the synchronous twin is the same
code with ``async`` and ``await`` removed and the asyncio names replaced by their synchronous
counterparts (the approach of ``unasync``). Run ``make sdk`` after editing aio.py;
tests/unit/test_sdk_generated.py fails when the committed client.py differs from this output.

    python scripts/gen_sync_client.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import generated

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "client" / "gradserve_client" / "aio.py"
TARGET = ROOT / "client" / "gradserve_client" / "client.py"

DOCSTRING = '''"""`Client`: the synchronous gRPC client of a gradserve server.

with gs.Client("127.0.0.1:50051") as c:
    c.evaluate(g, {"x": 0.7})
    c.grad(g, {"x": 0.7}, of="y", wrt="x")

Generated from aio.py by scripts/gen_sync_client.py (``make sdk``): do not edit. The methods
are defined once, in aio.py; `LocalClient` shares them (`Methods`).
"""'''

# (pattern, replacement), applied in order to everything after the module docstring.
RULES: list[tuple[str, str]] = [
    (r"\basync def ", "def "),
    (r"\basync for ", "for "),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\.__aiter__\(\)", ".__iter__()"),
    (r"\.__anext__\(\)", ".__next__()"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\bAsync(Iterator|Run|Methods|Client)\b", r"\1"),
    (r"\b_ASYNCIO = True\b", "_ASYNCIO = False"),
    # docstrings
    (r"An asyncio connection to a gradserve server \(a ``grpc.aio`` channel underneath\): create"
     r"\n    it inside a running event loop\. Use it as an async context manager",
     "A connection to a gradserve server (a ``grpc`` channel underneath), safe to share\n"
     "    between threads. Use it as a context manager"),
    (r"``grpc\.aio`` client interceptors", "``grpc`` client interceptors"),
]  # fmt: skip


def generate(source: str) -> str:
    """client.py's text from aio.py's (before formatting)."""
    match = re.match(r'\s*""".*?"""', source, re.S)
    if match is None:
        raise SystemExit(f"{SOURCE}: no module docstring")
    body = source[match.end() :]
    for pattern, replacement in RULES:
        body, count = re.subn(pattern, replacement, body)
        if count == 0:
            raise SystemExit(f"gen_sync_client: rule {pattern!r} no longer matches aio.py")
    return DOCSTRING + body


def render() -> str:
    # ruff sorts the imports the renames reorder, and reformats lines that lost an ``await``.
    return generated.ruff_formatted(generate(SOURCE.read_text()), TARGET)


if __name__ == "__main__":
    sys.exit(generated.main(__doc__.splitlines()[0], TARGET, render, "make sdk"))
