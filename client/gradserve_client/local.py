"""`LocalClient`: the methods of `Client`, run in-process by the same numpy core, no network.

For notebooks and tests, and to time the core alone. This is the only module of the SDK that
imports the server package (``gradserve``), and only when a LocalClient is created.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Mapping
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from . import _common as cm
from .errors import GradserveError, error_class
from .opset import OPSET
from .opset.listing import operators_response
from .proto import gradient_service_pb2 as pb
from .training import Checkpoint, Optimizer, Run, Schedule, TrainResult, TrainStep

__all__ = ["LocalClient"]

_MAX_GRAPHS = 256  # graph versions whose Programs a LocalClient keeps


class LocalClient:
    """The methods of `Client` (evaluate, jacobian, grad, vjp, jvp, operators, server_info,
    health), computed in this process by gradserve's core, with the same results and the same
    exceptions (`InvalidArgument` and its field violations for bad graphs and inputs).

    Each graph is converted and validated once (per version of a `Graph`) and its compiled
    programs are cached by the core, so a call costs little more than the computation itself.
    Requires the ``gradserve`` package (the server side of this distribution).
    """

    def __init__(self) -> None:
        try:
            import gradserve.autodiff as core
        except ImportError as exc:  # pragma: no cover - the client-only install
            raise ImportError(
                "LocalClient needs the gradserve server package (pip install gradserve)"
            ) from exc
        from gradserve.rpc import errors as rpc_errors
        from gradserve.rpc.graph_cache import GraphCache

        self._core = core
        self._rpc_errors = rpc_errors
        self._cache = GraphCache(_MAX_GRAPHS)
        self._graphs: dict[str, Any] = {}  # GraphMeta.key -> the server's CachedGraph

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget the cached programs."""
        self._graphs.clear()
        self._cache = type(self._cache)(_MAX_GRAPHS)

    def __repr__(self) -> str:
        return "LocalClient()"

    # -- graphs

    def _entry(self, meta: cm.GraphMeta) -> Any:
        """The server's CachedGraph of a graph version, converted and validated on first use."""
        entry = self._graphs.get(meta.key)
        if entry is None:
            unlimited = sys.maxsize
            entry = self._cache.put_proto(meta.proto, max_nodes=unlimited, max_elements=unlimited)
            if len(self._graphs) >= _MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[meta.key] = entry
        return entry

    def _program(self, call: cm.Call) -> Any:
        """The Program of a call's graph version (for the fed shapes, if it has -1 dimensions),
        converted and validated on first use exactly as the server does (its graph cache)."""
        try:
            entry = self._entry(call.meta)
            if entry.program is not None:
                return entry.program
            shapes = {n: np.shape(v) for n, v in call.feeds.items()}
            return entry.program_for(shapes, sys.maxsize)
        except (self._core.GraphError, self._rpc_errors.RpcError) as exc:
            raise _converted(exc, self._rpc_errors, call.meta, False) from None

    def _run(self, fn: Any, meta: cm.GraphMeta, *args: Any) -> Any:
        """``fn(*args)`` (running a graph), with the core's and the server code's errors raised
        as the server would report them (the same exception classes, field violations and
        reasons)."""
        try:
            return fn(*args)
        except (self._core.GraphError, self._rpc_errors.RpcError) as exc:
            raise _converted(exc, self._rpc_errors, meta, True) from None

    def _vjp(self, call: cm.Call) -> Any:
        program = self._program(call)
        vjp_values = self._core.vjp_values
        _, grads = self._run(vjp_values, call.meta, program, call.feeds, call.seeds, call.wrt)
        return call.by_wrt(grads)

    # -- the API

    def evaluate(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        outputs: cm.Names = None,
    ) -> dict[str, np.ndarray]:
        """As `Client.evaluate`: the values of the outputs, by output name."""
        call = cm.evaluate_call(graph, inputs, outputs)
        program = self._program(call)
        return self._run(self._core.evaluate, call.meta, program, call.feeds, call.of)

    def jacobian(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: cm.Names = None,
        wrt: cm.Names = None,
        mode: str = "auto",
    ) -> Any:
        """As `Client.jacobian`: an ndarray for single names, else ``J[of][wrt]``."""
        call = cm.jacobian_call(graph, inputs, of, wrt, mode)
        program = self._program(call)
        jacobian = self._core.jacobian
        _, result = self._run(jacobian, call.meta, program, call.feeds, call.of, call.wrt, mode)
        return call.jacobians(result)

    def grad(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        of: str | None = None,
        wrt: cm.Names = None,
    ) -> Any:
        """As `Client.grad`: the gradient of a scalar output."""
        return self._vjp(cm.grad_call(graph, inputs, of, wrt))

    def vjp(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        cotangents: Mapping[str, npt.ArrayLike],
        wrt: cm.Names = None,
    ) -> Any:
        """As `Client.vjp`: the gradients of ``sum(cotangent * output)``."""
        return self._vjp(cm.vjp_call(graph, inputs, cotangents, wrt))

    def jvp(
        self,
        graph: cm.GraphLike,
        inputs: Mapping[str, npt.ArrayLike],
        tangents: Mapping[str, npt.ArrayLike],
        of: cm.Names = None,
    ) -> Any:
        """As `Client.jvp`: the directional derivatives of the outputs ``of``."""
        call = cm.jvp_call(graph, inputs, tangents, of)
        program = self._program(call)
        jvp_values = self._core.jvp_values
        _, out = self._run(jvp_values, call.meta, program, call.feeds, call.seeds, call.of)
        return call.by_of(out)

    def train(
        self,
        graph: cm.GraphLike,
        *,
        loss: str | None = None,
        params: Mapping[str, npt.ArrayLike],
        data: Mapping[str, npt.ArrayLike],
        optimizer: Optimizer,
        schedule: Schedule | None = None,
        batch_size: int | None = 128,
        epochs: int | None = None,
        max_steps: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        report_every: int = 1,
        checkpoint_every: int | None = 100,
        resume: Checkpoint | None = None,
        progress: bool = False,
        timeout: float | None = None,
    ) -> Run:
        """As `Client.train`, in this process: the same `Run`, results, checkpoints (which
        resume on a server too) and errors. ``timeout`` is the run's deadline in seconds."""
        from gradserve.rpc import training as rpc_training

        run = cm.train_call(
            graph, loss=loss, params=params, data=data, optimizer=optimizer, schedule=schedule,
            batch_size=batch_size, epochs=epochs, max_steps=max_steps, seed=seed,
            shuffle=shuffle, report_every=report_every, checkpoint_every=checkpoint_every,
            resume=resume,
        )  # fmt: skip
        meta = run.meta
        stop: list[Any] = []
        deadline = None if timeout is None else time.monotonic() + timeout

        def cancelled() -> bool:
            return bool(stop) or (deadline is not None and time.monotonic() > deadline)

        def events() -> Any:
            entry = self._run(self._entry, meta, meta)
            prepared = self._run(
                functools.partial(
                    rpc_training.prepare,
                    max_nodes=sys.maxsize,
                    max_elements=sys.maxsize,
                    cancel=cancelled if timeout is not None else None,
                ),
                meta, entry, run.request, run.feeds, run.arrays,
            )  # fmt: skip
            it, gid, batch = prepared.events, prepared.graph_id, prepared.batch_size
            step_event = rpc_training.tr.StepEvent
            checkpoint_event = rpc_training.tr.CheckpointEvent
            while True:
                try:
                    ev = next(it)
                except StopIteration:
                    return
                except self._core.Cancelled:
                    raise error_class(grpc.StatusCode.DEADLINE_EXCEEDED)(
                        "deadline exceeded"
                    ) from None
                except (self._core.GraphError, self._rpc_errors.RpcError) as exc:
                    raise _converted(exc, self._rpc_errors, meta, True) from None
                if type(ev) is step_event:
                    yield "step", TrainStep(ev.step, ev.epoch, ev.loss, ev.grad_norm, ev.lr,
                                            ev.elapsed_seconds, ev.finite)  # fmt: skip
                elif type(ev) is checkpoint_event:
                    proto = rpc_training.checkpoint_to_proto(ev.checkpoint, gid, batch)
                    yield "checkpoint", Checkpoint(proto)
                else:
                    result = TrainResult(ev.steps, ev.final_loss, ev.elapsed_seconds)
                    yield "result", (ev.params, result)

        def cancel() -> None:
            stop.append(None)

        return Run(events, cancel, total=run.total, start=run.start, progress=progress)

    def operators(self) -> list[cm.OperatorInfo]:
        """The opset's operators, as `Client.operators` lists them."""
        return cm.decode_operators(operators_response())

    def server_info(self) -> cm.ServerInfo:
        """This process as a server: the package version, no limits, feature "local"."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            current = version("gradserve")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            current = "0+unknown"
        limits = {f.name: 0 for f in pb.ServerLimits.DESCRIPTOR.fields}
        return cm.ServerInfo(current, OPSET, limits, ("local",))

    def health(self, service: str = "") -> str:
        """Always "SERVING": the core is this process."""
        return "SERVING"


def _converted(
    exc: Exception, rpc_errors: Any, meta: cm.GraphMeta, running: bool
) -> GradserveError:
    """A core GraphError or a server-side RpcError as the SDK exception a server would raise."""
    if not isinstance(exc, rpc_errors.RpcError):
        exc = rpc_errors.from_graph_error(exc, meta.input_dtypes, running=running)
    return error_class(exc.code)(  # type: ignore[attr-defined]
        exc.message,  # type: ignore[attr-defined]
        field_violations=getattr(exc, "violations", ()),
        reason=exc.reason,  # type: ignore[attr-defined]
        metadata=exc.metadata,  # type: ignore[attr-defined]
    )
