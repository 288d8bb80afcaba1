"""What every generator in scripts/ shares: ruff's formatting of the code it writes, and the
command line that writes its file or, with --check, says that the file is stale."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ruff_formatted(code: str, target: Path, select: str = "I") -> str:
    """``code`` with the lint fixes of ``select`` (imports sorted, ...) and formatted as ruff
    does, so that the generated file passes ``make lint``."""
    for command in (["check", "--fix-only", "--select", select], ["format"]):
        code = subprocess.run(
            [sys.executable, "-m", "ruff", *command, "--stdin-filename", str(target), "-"],
            input=code,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    return code


def main(
    description: str, target: Path, render: Callable[[], str], remake: str = "make docs"
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if target.read_text() != text:
            print(f"{target} is out of date: run `{remake}`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0
