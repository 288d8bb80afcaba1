"""Helpers for integration tests that speak the wire protocol with the raw generated stubs."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.rpc import error_details_pb2
from gradserve.autodiff import GraphDef, InputDef, NodeDef
from gradserve_client.proto import graph_pb2, tensor_codec
from grpc_status import rpc_status

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def attr_value(value: Any) -> graph_pb2.AttrValue:
    """A Python attribute value (int, float, str, list of ints/floats, ndarray) as AttrValue."""
    if isinstance(value, np.ndarray):
        return graph_pb2.AttrValue(tensor=tensor_codec.to_tensor(value))
    if isinstance(value, bool | int):
        return graph_pb2.AttrValue(i=int(value))
    if isinstance(value, float):
        return graph_pb2.AttrValue(f=value)
    if isinstance(value, str):
        return graph_pb2.AttrValue(s=value)
    if all(isinstance(v, int) for v in value):
        return graph_pb2.AttrValue(ints=graph_pb2.Ints(values=list(value)))
    return graph_pb2.AttrValue(floats=graph_pb2.Floats(values=list(value)))


@dataclass
class G:
    """A graph spec that converts to both the wire Graph and the core GraphDef."""

    inputs: Sequence[tuple[str, str, Sequence[int]]]  # (name, dtype, shape)
    nodes: Sequence[tuple[str, str, Sequence[str], Mapping[str, Any]]]  # (name, op, ins, attrs)
    outputs: Sequence[str]

    def proto(self) -> graph_pb2.Graph:
        return graph_pb2.Graph(
            inputs=[
                graph_pb2.InputSpec(name=n, dtype=tensor_codec.dtype_from_name(d), shape=list(s))
                for n, d, s in self.inputs
            ],
            nodes=[
                graph_pb2.Node(
                    name=n, op=op, inputs=list(ins), attrs={k: attr_value(v) for k, v in a.items()}
                )
                for n, op, ins, a in self.nodes
            ],
            outputs=list(self.outputs),
        )

    def graphdef(self) -> GraphDef:
        return GraphDef(
            tuple(InputDef(n, d, tuple(s)) for n, d, s in self.inputs),
            tuple(NodeDef(n, op, tuple(ins), dict(a)) for n, op, ins, a in self.nodes),
            tuple(self.outputs),
        )


def tensors(arrays: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tensor_codec.to_tensor(np.asarray(v)) for k, v in arrays.items()}


def arrays(tensor_map: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: tensor_codec.from_tensor(v) for k, v in tensor_map.items()}


@dataclass
class RichError:
    """A failed call's code, message, BadRequest fields and ErrorInfo reason."""

    code: grpc.StatusCode
    message: str
    fields: list[str]
    descriptions: list[str]
    reason: str
    metadata: dict[str, str]


def rich_error(err: grpc.RpcError) -> RichError:
    fields: list[str] = []
    descriptions: list[str] = []
    reason = ""
    metadata: dict[str, str] = {}
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields += [v.field for v in bad.field_violations]
            descriptions += [v.description for v in bad.field_violations]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            assert info.domain == "gradserve"
            reason = info.reason
            metadata = dict(info.metadata)
    return RichError(err.code(), err.details() or "", fields, descriptions, reason, metadata)


def call_error(fn, *args, **kwargs) -> RichError:
    """Call an RPC that must fail; return its RichError."""
    try:
        result = fn(*args, **kwargs)
        if hasattr(result, "__next__"):  # a server stream: the error comes while reading
            list(result)
    except grpc.RpcError as err:
        return rich_error(err)
    raise AssertionError("the call succeeded")


class ServerProcess:
    """``python -m gradserve serve --port 0`` in a subprocess; the port is parsed from stdout."""

    def __init__(self, *flags: str, env: Mapping[str, str] | None = None) -> None:
        self.flags = ("--host", "127.0.0.1", "--port", "0", "--metrics-port", "0", *flags)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.banner = ""  # the "gradserve listening on ..." line
        self.stderr = ""  # what the process wrote on stderr, read by stop()
        self.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "gradserve", "serve", *self.flags],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if time.monotonic() > deadline or not line:
            raise RuntimeError(f"server did not start: {self.proc.stderr.read()}")
        match = re.match(r"gradserve listening on ([\d.]+):(\d+) \(", line)
        assert match, line
        self.port = int(match.group(2))
        self.banner = line.strip()
        # Drain stderr as it comes: a full pipe would block the server's logging, and so
        # every thread that logs (a server that logs each failed call would hang).
        self._stderr_lines: list[str] = []
        self._drain = threading.Thread(
            target=self._stderr_lines.extend, args=(self.proc.stderr,), daemon=True
        )
        self._drain.start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._drain.join(timeout)
        self.stderr = "".join(self._stderr_lines)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return rc

    def restart(self) -> None:
        self.stop()
        self.start()
