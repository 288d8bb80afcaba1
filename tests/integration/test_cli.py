"""The ``gradserve`` command, run as a subprocess against a real server."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

SCRIPT = Path(sys.executable).with_name("gradserve")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gradserve_client.cli"]


def gradserve(*args: str, server: str | None = None, cwd: Path | None = None) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "GRADSERVE_TARGET"}
    if server:
        env["GRADSERVE_TARGET"] = server
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, env=env, timeout=60, cwd=cwd
    )


def ok_json(*args: str, server: str) -> Any:
    result = gradserve(*args, "--json", server=server)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: Any) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gradserve: error: ")
    return lines[0]


def test_eval_json(server: Any) -> None:
    out = ok_json(
        "eval", "sin(x)**2 + ln(y)", "--at", "x=0.7", "--at", "y=2", server=server.address
    )
    assert out == {"value": pytest.approx(math.sin(0.7) ** 2 + math.log(2))}
    out = ok_json("eval", "x * y", "--at", "x=[1,2]", "--at", "y=[[1],[3]]", server=server.address)
    assert out["value"] == [[1.0, 2.0], [3.0, 6.0]]


def test_grad_json_matches_the_closed_form(server: Any) -> None:
    x = 0.7
    out = ok_json("grad", "ln(sin(x**3)**2)", "--at", "x=0.7", server=server.address)
    assert out["value"] == pytest.approx(math.log(math.sin(x**3) ** 2))
    assert out["grad"] == {"x": pytest.approx(6 * x**2 * math.cos(x**3) / math.sin(x**3))}
    out = ok_json(
        "grad", "3*x**2*y", "--at", "x=1.5", "--at", "y=0.9", "--wrt", "y", server=server.address
    )
    assert out["grad"] == {"y": pytest.approx(3 * 1.5**2)}
    out = ok_json("grad", "sum(x**2)", "--at", "x=[1,2,3]", server=server.address)
    assert out["grad"]["x"] == pytest.approx([2.0, 4.0, 6.0])


def test_jacobian_json_of_a_vector_function(server: Any) -> None:
    x = 0.7
    out = ok_json("jacobian", "[ln(x**2), sin(3*x)]", "--at", "x=0.7", server=server.address)
    assert out["value"] == pytest.approx([math.log(x**2), math.sin(3 * x)])
    assert out["jacobian"] == {"x": pytest.approx([2 / x, 3 * math.cos(3 * x)])}
    out = ok_json("jacobian", "x * y", "--at", "x=[1,2]", "--at", "y=[3,4]", server=server.address)
    np.testing.assert_allclose(out["jacobian"]["x"], [[3, 0], [0, 4]])
    np.testing.assert_allclose(out["jacobian"]["y"], [[1, 0], [0, 2]])


def test_readable_output(server: Any) -> None:
    result = gradserve(
        "jacobian", "x * y", "--at", "x=[1,2]", "--at", "y=[3,4]", server=server.address
    )
    assert result.returncode == 0, result.stderr
    assert "shape (2, 2)" in result.stdout and "d/dx" in result.stdout
    assert "[[3., 0.]," in result.stdout
    result = gradserve("grad", "x**2", "--at", "x=3", server=server.address)
    assert result.stdout.splitlines() == ["value: 9.0", "grad x: 6.0"]
    assert gradserve("eval", "2+3", server=server.address).stdout.strip() == "5.0"


def test_grad_of_a_vector_expression_points_to_jacobian(server: Any) -> None:
    line = one_line_error(gradserve("grad", "[x, x**2]", "--at", "x=1", server=server.address))
    assert "jacobian" in line and "sum(" in line


def test_ops_and_health(server: Any) -> None:
    ops = ok_json("ops", server=server.address)
    names = {op["name"] for op in ops}
    assert {"sin", "log", "matmul", "stack"} <= names
    result = gradserve("ops", server=server.address)
    assert result.returncode == 0 and "matmul" in result.stdout
    assert ok_json("health", server=server.address)["status"] == "SERVING"
    result = gradserve("health", "--server", server.address)
    assert result.returncode == 0 and "SERVING" in result.stdout


def test_refuses_code_and_runs_nothing(server: Any, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # The whole whitelist is tested in tests/unit/test_expr.py; here, that the command obeys it.
    for expr in ('__import__("os").system("echo pwned > pwned")', "open('pwned', 'w')"):
        result = gradserve("eval", expr, "--at", "x=[1,2]", server=server.address, cwd=tmp_path)
        line = one_line_error(result)
        assert "not allowed" in line or "unknown function" in line, line
        assert "pwned" not in result.stdout
    assert not marker.exists()
    line = one_line_error(gradserve("eval", "x", "--at", "x=__import__('os')", cwd=tmp_path))
    assert "--at x" in line


def test_one_line_errors(server: Any) -> None:
    assert "syntax error" in one_line_error(gradserve("eval", "sin(x", "--at", "x=1"))
    assert "unknown name 'z'" in one_line_error(
        gradserve("eval", "sin(z)", "--at", "x=1", server=server.address)
    )
    assert "broadcast" in one_line_error(
        gradserve("eval", "x + y", "--at", "x=[1,2]", "--at", "y=[1,2,3]", server=server.address)
    )
    assert "--wrt q" in one_line_error(
        gradserve("grad", "x**2", "--at", "x=1", "--wrt", "q", server=server.address)
    )


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = one_line_error(gradserve("eval", "x", "--at", "x=1", "--server", f"127.0.0.1:{port}"))
    assert "cannot reach" in line
    line = one_line_error(gradserve("health", server=f"127.0.0.1:{port}"))
    assert "cannot reach" in line


def test_serve_execs_the_server() -> None:
    result = gradserve("serve", "--help")
    assert result.returncode == 0 and "--max-jacobian-elements" in result.stdout
