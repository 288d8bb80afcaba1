"""A smoke run of the benchmark harness: tiny sizes, few repetitions, no torch or jax needed.

Anchors that are not installed are reported as such, never fatal; this test only checks that
the harness times contenders, takes ratios and prints the table.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from bench import cli, core
from bench.harness import (
    Contender,
    Row,
    Settings,
    cores_table,
    summary_table,
    thread_environment,
    time_interleaved,
)


def test_interleaved_timing_gives_medians_and_ratio() -> None:
    settings = Settings(quick=True, rounds=3, min_sample=0.001, warmup=1)
    contenders = [
        Contender("gradserve", lambda: sum(range(200))),
        Contender("anchor", lambda: sum(range(100))),
        Contender("missing", None, "not installed"),
    ]
    figures, _, notes = time_interleaved(contenders, settings)
    assert figures["gradserve"] > 0 and figures["anchor"] > 0
    assert figures["missing"] is None and notes["missing"] == "not installed"
    row = Row("T1", "toy", "s", "gradserve", "anchor", "≤ 10× anchor", 10.0, figures=figures)
    assert row.ratio == pytest.approx(figures["gradserve"] / figures["anchor"])
    table = summary_table([row])
    assert "T1" in table and f"{row.ratio:.2f}x" in table and "≤ 10× anchor" in table


def test_throughput_rows_compare_the_other_way() -> None:
    row = Row("T2", "toy", "req/s", "gs", "echo", "≥ 0.6×", 0.6, higher_is_better=True)
    row.figures = {"gs": 70.0, "echo": 100.0}
    assert row.ratio == pytest.approx(0.7) and row.met is True
    row.figures["gs"] = 50.0
    assert row.met is False


def test_quick_core_run_prints_a_table_with_ratios(
    tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Anchors that need torch or jax are left out, as if they were not installed.
    monkeypatch.setattr(core, "_torch", lambda: None)
    monkeypatch.setattr(core, "_jax", lambda: None)
    monkeypatch.setattr(cli, "RESULTS_DIR", tmp_path / "results")
    out_json = tmp_path / "bench.json"
    assert cli.main(["--only", "W1", "--quick", "--rounds", "2", "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "| W1 " in printed and "torch eager n/a" in printed
    data = json.loads(out_json.read_text())
    (row,) = data["rows"]
    assert row["id"] == "W1"
    numpy_median = row["figures"]["numpy (hand)"]
    assert numpy_median is not None and numpy_median > 0
    gs_median = row["figures"][row["gradserve"]]
    assert gs_median is not None and gs_median > 0, row["notes"]
    assert row["ratio"] is None  # its target anchor, torch, is "not installed" here
    # The detail table gives gradserve's ratio to every anchor that ran, numpy's included.
    numpy_line = next(line for line in printed.splitlines() if "| numpy (hand)" in line)
    assert re.search(r"\| \d+\.\d\dx", numpy_line), numpy_line


@pytest.mark.parametrize("workload", ["c1", "c2", "t1"])
def test_model_workloads_agree_with_torch(workload: str) -> None:
    # The bench times a contender only after its gradients matched torch's: a figure for
    # gradserve means the CNN and transformer graphs differentiate as torch autograd does.
    from bench import models  # torch is in the dev extra: the anchor is always there

    row = getattr(models, workload)(Settings(quick=True, rounds=1, min_sample=0.0, warmup=0))
    for name in (models.GS, models.GS_CORE, models.TORCH):
        assert row.figures[name] is not None, row.notes.get(name)


def test_cnn_training_row_checks_its_updates_against_torch() -> None:
    from bench import models

    row = models.w6(Settings(quick=True, rounds=1, min_sample=0.0, warmup=0))
    assert row.figures[models.GS_STREAM] and row.figures[models.TORCH_SGD], row.notes
    assert "differ" not in row.notes.get(models.GS_STREAM, "")  # it trained what torch trains


def test_w6_check_tells_a_drifting_trajectory_from_a_wrong_one() -> None:
    from bench.models import W6_UPDATE_RTOL, _close, _updates

    start = {"w": np.full(4, 3.0)}
    trained = start["w"] + np.array([1.0, -2.0, 0.5, 0.0])
    want = _updates({"w": trained}, start)
    drifted = {"w": trained + 0.015}  # 0.75 % of the largest move, 2
    wrong = {"w": start["w"] + 1.05 * want["w"]}  # a 5 % larger step
    assert not _close(_updates(drifted, start), want, W6_UPDATE_RTOL)
    assert _close(_updates(wrong, start), want, W6_UPDATE_RTOL) == ["w"]


@pytest.mark.parametrize("workload", ["s1", "s3", "h1"])
def test_quick_structured_workloads_time_gradserve_checked_against_numpy(monkeypatch, workload):
    from bench import sparse

    monkeypatch.setattr(sparse, "_torch", lambda: None)
    monkeypatch.setattr(sparse, "_jax", lambda: None)
    settings = Settings(quick=True, rounds=2, min_sample=0.001, warmup=1)
    out = getattr(sparse, workload)(settings)
    rows = out if isinstance(out, list) else [out]
    for row in rows:
        assert row.figures[row.gradserve] is not None, (row.id, row.notes)
    if workload == "s3":  # numpy by hand passed its check against the closed form: timed
        assert rows[0].figures["numpy (hand)"] is not None


def test_quick_training_rows_time_both_gradserve_clients_and_their_cpu(monkeypatch) -> None:
    from bench import train

    monkeypatch.setattr(train, "torch_trainer", lambda data, params: None)
    monkeypatch.setattr(train, "jax_trainer", lambda data, params: None)
    stream, local = train.run(Settings.make(quick=True))
    assert (stream.id, local.id) == ("W5", "W5b")
    for name in (train.GS_STREAM, train.GS_STREAM_EACH, train.GS_LOCAL, train.NUMPY):
        assert stream.figures[name] > 0, stream.notes
        assert re.search(r"CPU \d+\.\d\d ms/step", stream.notes[name]), stream.notes[name]
    for name in (train.GS_STREAM, train.GS_STREAM_EACH):
        assert "(client and server)" in stream.notes[name]
        assert "differ" not in stream.notes[name]  # it trained what numpy trains
    assert stream.notes[train.TORCH] == "not installed" and local.ratio > 0


def test_pinned_cores_are_inherited_by_the_processes_the_bench_starts() -> None:
    # Servers, M1's runs and the workers' clients are children: they must run on the same core.
    child = "import os; print(sorted(os.sched_getaffinity(0)))"
    code = (
        "import os, subprocess, sys\n"
        "from bench.harness import pin_cores\n"
        "print(list(pin_cores('1')))\n"
        f"subprocess.run([sys.executable, '-c', {child!r}])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mine, theirs = out.stdout.split("\n")[:2]
    assert mine == theirs and len(json.loads(mine)) == 1, out.stdout


def test_threads_follow_the_cores() -> None:
    one, two = thread_environment(1), thread_environment(2)
    assert one["OPENBLAS_NUM_THREADS"] == one["GRADSERVE_BLAS_THREADS"] == "1"
    assert "multi_thread_eigen=false" in one["XLA_FLAGS"]
    assert two["OMP_NUM_THREADS"] == two["GRADSERVE_BLAS_THREADS"] == "2"
    assert "XLA_FLAGS" not in two


def test_core_settings_side_by_side() -> None:
    def row(gs: float) -> Row:
        r = Row("C1", "toy", "s", "gs", "torch", "≤ 1.5× torch", 1.5)
        r.figures = {"gs": gs, "torch": 1.0}
        return r

    table = cores_table({"1": [row(1.2)], "all": [row(1.8)]})
    header, _, line = table.splitlines()
    assert "ratio (1 core)" in header and "ratio (all cores)" in header
    assert "| 1.20x" in line and "| 1.80x" in line and "| met" in line and "NOT MET" in line


def test_quick_rpc_rows_time_gradserve_the_stacks_and_the_floor() -> None:
    # Every contender answered R1's call with the closed form (else it would be untimed, with
    # a note), the floor's prebuilt server included.
    from bench import rpc

    r1, r2, r3 = rpc.run(Settings.make(quick=True))
    assert (r1.id, r2.id, r3.id) == ("R1", "R2", "R3")
    for row in (r1, r3):
        for name in (rpc.GS, rpc.ECHO, rpc.FLOOR_STUB, rpc.FLOOR_CLIENT):
            assert row.figures[name] > 0, row.notes
        assert row.ratio > 0
    assert r1.figures[rpc.GS_STUB] > 0 and r2.figures[rpc.GS] > 0, r2.notes


def test_quick_wkc_row_times_the_workers_and_the_shared_connection() -> None:
    from bench import workers

    row = workers.wkc(Settings.make(quick=True))
    assert len(row.figures) == 3 and all(v > 0 for v in row.figures.values()), row.notes
    assert row.ratio > 0
    assert sum(row.extra["server_cpu_seconds"].values()) > 0
