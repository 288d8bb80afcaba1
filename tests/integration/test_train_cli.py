"""``gradserve train`` as a subprocess against a real server: the npz it writes, the loss-curve
PNG, and one-line errors (missing files, no matplotlib)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gradserve_client as gs
import numpy as np
import pytest

SCRIPT = Path(sys.executable).with_name("gradserve")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gradserve_client.cli"]


def gradserve(*args: str, server: str, extra_env: dict[str, str] | None = None) -> Any:
    env = {**os.environ, "GRADSERVE_TARGET": server, **(extra_env or {})}
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, env=env, timeout=60)


def one_line_error(result: Any) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gradserve: error: ")
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A linear regression: model.gsg, data.npz (X, t), init.npz (w, b)."""
    g = gs.Graph()
    X = g.input("X", shape=(-1, 3))
    t = g.input("t", shape=(-1,))
    w = g.input("w", shape=(3,))
    b = g.input("b", shape=())
    r = X @ w + b - t
    g.output("loss", gs.mean(r * r))
    rng = np.random.default_rng(0)
    Xv = rng.normal(size=(200, 3))
    paths = {"graph": tmp_path / "model.gsg", "data": tmp_path / "data.npz",
             "params": tmp_path / "init.npz", "out": tmp_path / "trained.npz"}  # fmt: skip
    g.save(paths["graph"])
    np.savez(paths["data"], X=Xv, t=Xv @ np.array([1.0, -2.0, 0.5]) + 3.0)
    np.savez(paths["params"], w=np.zeros(3), b=np.array(0.0))
    return paths


def _args(files: dict[str, Path], *more: str) -> list[str]:
    return ["train", "--graph", str(files["graph"]), "--data", str(files["data"]),
            "--params", str(files["params"]), "--loss", "loss", "--out", str(files["out"]),
            *more]  # fmt: skip


def test_train_writes_the_final_params(server, files):
    result = gradserve(
        *_args(files, "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9",
               "--batch-size", "32", "--epochs", "20", "--json"),
        server=server.address,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 20 * 7 and summary["final_loss"] < 1e-3
    with np.load(files["out"], allow_pickle=False) as f:
        np.testing.assert_allclose(f["w"], [1.0, -2.0, 0.5], atol=2e-2)
        np.testing.assert_allclose(f["b"], 3.0, atol=2e-2)


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="no matplotlib")
def test_train_plots_the_loss_curve(server, files, tmp_path):
    png = tmp_path / "loss.png"
    result = gradserve(
        *_args(files, "--optimizer", "adam", "--lr", "0.05", "--batch-size", "64",
               "--max-steps", "30", "--plot", str(png)),
        server=server.address,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "trained 30 steps" in result.stdout and "loss curve" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_one_line_errors(server, files, tmp_path):
    missing = one_line_error(
        gradserve(
            *_args({**files, "data": tmp_path / "nope.npz"}, "--lr", "0.1"), server=server.address
        )
    )
    assert "--data" in missing and "no such file" in missing
    assert "--lr" in one_line_error(gradserve(*_args(files), server=server.address))
    bad_loss = one_line_error(gradserve(*_args(files, "--lr", "0.1", "--loss", "nope"),
                                        server=server.address))  # fmt: skip
    assert "loss" in bad_loss and "INVALID_ARGUMENT" in bad_loss
    # without matplotlib, --plot is one clear line before any training
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib')\n")
    result = gradserve(*_args(files, "--lr", "0.1", "--plot", str(tmp_path / "x.png")),
                       server=server.address, extra_env={"PYTHONPATH": str(fake)})  # fmt: skip
    assert "pip install 'gradserve[plot]'" in one_line_error(result)
    assert not (tmp_path / "x.png").exists()


def test_the_training_example_runs_against_a_server(server):
    example = Path(__file__).resolve().parents[2] / "examples" / "train.py"
    result = subprocess.run(
        [sys.executable, str(example), "--target", server.address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "checkpoint at step 75" in result.stdout and "training accuracy" in result.stdout
