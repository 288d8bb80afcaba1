"""Every Python block of README.md and docs/*.md runs as written, against a real server, so
the docs cannot drift from the code.

The blocks of one file run in order, in one interpreter (a later block may use an earlier
block's names, as a reader would), with the address ``127.0.0.1:50051`` of the examples
pointed at the test's server, in a temporary folder (what they write stays out of the
repository) that links the repository's ``tests/data``: a reader runs the examples from a
clone's root, where paths such as ``tests/data/onnx/...`` name the test models. A block
meant only to be read is marked on the line before it with
``<!-- docs-test: skip (why) -->``. Relative links of the docs must name files that exist.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from wire import PYTHON, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP = "<!-- docs-test: skip"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#:\s]+)(#[^)]*)?\)")


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(line, code, skipped) of every python block of a markdown text."""
    blocks = []
    for match in BLOCK.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group(1), before.startswith(SKIP)))
    return blocks


WITH_CODE = [p for p in DOCS if any(not s for _, _, s in python_blocks(p.read_text()))]


@pytest.mark.parametrize("doc", WITH_CODE, ids=[p.name for p in WITH_CODE])
def test_the_python_blocks_run(doc, server, tmp_path):
    blocks = [(line, code) for line, code, skipped in python_blocks(doc.read_text()) if not skipped]
    script = "\n".join(f"# {doc.name}:{line}\n{code}" for line, code in blocks)
    script = script.replace("127.0.0.1:50051", server.address)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "data").symlink_to(ROOT / "tests" / "data", target_is_directory=True)
    path = tmp_path / f"{doc.stem}_md.py"  # onnx.py would shadow the onnx package it imports
    path.write_text(script)
    done = subprocess.run(
        [PYTHON, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_skips_are_few_and_give_a_reason():
    skipped = [(p.name, line) for p in DOCS for line, _, s in python_blocks(p.read_text()) if s]
    assert len(skipped) <= 3, skipped
    for p in DOCS:
        for marker in re.findall(re.escape(SKIP) + r"[^>]*-->", p.read_text()):
            assert re.match(re.escape(SKIP) + r" \(.{10,}\) -->", marker), (p.name, marker)


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_relative_links_name_files_that_exist(doc):
    text = BLOCK.sub("", doc.read_text())
    missing = [t for t, _ in LINK.findall(text) if not (doc.parent / t).exists()]
    assert missing == []
