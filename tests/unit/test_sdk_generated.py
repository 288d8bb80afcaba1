"""client.py is generated from aio.py (scripts/gen_sync_client.py): the committed file must be
the generator's output, and the two clients must offer the same methods with the same
signatures and documentation."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import gradserve_client as gs

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [name for name in dir(gs.AsyncClient) if not name.startswith("_")]


def test_client_py_is_generated_from_aio_py() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_sync_client.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_client_has_the_same_methods() -> None:
    for client in (gs.Client, gs.LocalClient):
        assert [n for n in dir(client) if not n.startswith("_")] == PUBLIC
    for name in PUBLIC:
        sync, async_ = getattr(gs.Client, name), getattr(gs.AsyncClient, name)
        if not callable(sync):
            continue
        assert getattr(gs.LocalClient, name) is sync or name in ("close",), name
        expected = str(inspect.signature(async_)).replace("AsyncRun", "Run")
        assert str(inspect.signature(sync)) == expected, name
        assert inspect.iscoroutinefunction(async_) == (name not in ("train",)), name
