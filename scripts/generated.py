"""What every generator in scripts/ shares: write its file, or with --check say it is stale."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path


def main(description: str, target: Path, render: Callable[[], str]) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    args = parser.parse_args()
    text = render()
    if args.check:
        if target.read_text() != text:
            print(f"{target} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0
