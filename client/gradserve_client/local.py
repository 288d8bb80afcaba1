"""`LocalClient`: the methods of `Client`, run in-process by the same numpy core, no network.

For notebooks and tests, and to time the core alone. This is the only module of the SDK that
imports the server package (``gradserve``), and only when a LocalClient is created.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, TypeVar

import grpc
import numpy as np

from . import _methods as m
from ._args import Call
from ._graphs import GraphMeta
from ._train_stream import TrainCall
from .client import Methods
from .errors import GradserveError, error_class
from .training import Checkpoint, Run, TrainResult, TrainStep

__all__ = ["LocalClient"]

T = TypeVar("T")

_MAX_GRAPHS = 256  # graph versions whose Programs a LocalClient keeps


class LocalClient(Methods):
    """The methods of `Client` (evaluate, jacobian, grad, vjp, jvp, hessian, hvp,
    jacobian_sparsity, derivative_program, train, operators, server_info, health), computed in
    this process by gradserve's core, with the same results and the same exceptions
    (`InvalidArgument` and its field violations for bad graphs and inputs).

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

    def _entry(self, meta: GraphMeta) -> Any:
        """The server's CachedGraph of a graph version, converted and validated on first use."""
        entry = self._graphs.get(meta.key)
        if entry is None:
            unlimited = sys.maxsize
            entry = self._cache.put_proto(meta.proto, max_nodes=unlimited, max_elements=unlimited)
            if len(self._graphs) >= _MAX_GRAPHS:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[meta.key] = entry
        return entry

    def _program(self, call: Call) -> Any:
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

    def _run(self, fn: Any, meta: GraphMeta, *args: Any) -> Any:
        """``fn(*args)`` (running a graph), with the core's and the server code's errors raised
        as the server would report them (the same exception classes, field violations and
        reasons)."""
        try:
            return fn(*args)
        except (self._core.GraphError, self._rpc_errors.RpcError) as exc:
            raise _converted(exc, self._rpc_errors, meta, True) from None

    def _compute(self, fn: Any, call: Call, *args: Any, **kwargs: Any) -> Any:
        """``fn(program, call.feeds, *args, **kwargs)`` on the call's Program (see
        `_methods.InProcess`)."""
        program = self._program(call)
        run = functools.partial(fn, **kwargs) if kwargs else fn
        return self._run(run, call.meta, program, call.feeds, *args)

    def _invoke(
        self, method: m.Method[Any, T], call: Any, timeout: float | None, parallel: int = 1
    ) -> T:
        # In process the core computes the whole result: shares would only add passes' set-up.
        assert method.local is not None, method.rpc.path
        return method.local(self, call)

    def _train(self, run: TrainCall, progress: bool, timeout: float | None) -> Run:
        """The run in this process: the same `Run`, results, checkpoints (which resume on a
        server too) and errors. ``timeout`` is the run's deadline in seconds."""
        from gradserve.rpc import training as rpc_training

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


def _converted(exc: Exception, rpc_errors: Any, meta: GraphMeta, running: bool) -> GradserveError:
    """A core GraphError or a server-side RpcError as the SDK exception a server would raise."""
    if not isinstance(exc, rpc_errors.RpcError):
        exc = rpc_errors.from_graph_error(exc, meta.input_dtypes, running=running)
    return error_class(exc.code)(  # type: ignore[attr-defined]
        exc.message,  # type: ignore[attr-defined]
        field_violations=getattr(exc, "violations", ()),
        reason=exc.reason,  # type: ignore[attr-defined]
        metadata=exc.metadata,  # type: ignore[attr-defined]
    )
