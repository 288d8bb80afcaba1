"""``gradserve hessian``, ``gradserve jacobian --sparse`` and ``gradserve explain``, run as
subprocesses against a real server."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from test_cli import gradserve, ok_json, one_line_error


def test_hessian_json_matches_the_closed_form(server: Any) -> None:
    x, y = 0.7, 1.3
    out = ok_json(
        "hessian", "x**3 * y + sin(y)", "--at", f"x={x}", "--at", f"y={y}", server=server.address
    )
    assert out["value"] == pytest.approx(x**3 * y + math.sin(y))
    hessian = out["hessian"]
    assert hessian["x"]["x"] == pytest.approx(6 * x * y)
    assert hessian["x"]["y"] == pytest.approx(3 * x**2) == hessian["y"]["x"]
    assert hessian["y"]["y"] == pytest.approx(-math.sin(y))
    out = ok_json("hessian", "sum(x**2)", "--at", "x=[1,2,3]", server=server.address)
    np.testing.assert_allclose(out["hessian"]["x"]["x"], 2 * np.eye(3))


def test_hessian_of_a_vector_expression_is_one_line_error(server: Any) -> None:
    result = gradserve("hessian", "x**2", "--at", "x=[1,2]", server=server.address)
    assert "scalar" in one_line_error(result)


def test_sparse_jacobian_lists_the_stored_entries(server: Any) -> None:
    out = ok_json(
        "jacobian", "sin(x)", "--at", "x=[0.1,0.2,0.3]", "--sparse", server=server.address
    )
    block = out["jacobian"]["x"]
    assert block["shape"] == [3, 3] and block["rows"] == [0, 1, 2] == block["cols"]
    assert block["values"] == pytest.approx(np.cos([0.1, 0.2, 0.3]).tolist())
    text = gradserve("jacobian", "sin(x)", "--at", "x=[0.1,0.2]", "--sparse", server=server.address)
    assert text.returncode == 0, text.stderr
    assert "shape (2, 2), 2 stored entries:" in text.stdout
    entry = next(line for line in text.stdout.splitlines() if line.strip().startswith("(1, 1)"))
    assert float(entry.split()[-1]) == pytest.approx(math.cos(0.2), rel=1e-12)


def test_explain_prints_the_derivative_program(server: Any) -> None:
    result = gradserve("explain", "sin(x) * x", "--wrt", "x", server=server.address)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("Graph(inputs=[") and "x: float64[]" in lines[0]
    assert any("cos(x)" in line for line in lines[1:])
    out = ok_json("explain", "x**2", "--wrt", "x", "--kind", "jvp", server=server.address)
    assert out["kind"] == "jvp" and out["program"].startswith("Graph(")
