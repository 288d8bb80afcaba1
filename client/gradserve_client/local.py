"""`LocalClient`: the methods of `Client`, run in-process by the same numpy core, no network.

For notebooks and tests, and to time the core alone. This is the only module of the SDK that
imports the server package (``gradserve``), and only when a LocalClient is created: its core
(``gradserve.autodiff``) and its in-process entry point (``gradserve.rpc.inprocess``).
"""

from __future__ import annotations

import functools
import time
from typing import Any, TypeVar

import grpc
import numpy as np

from . import _methods as m
from ._args import Call
from ._graphs import GraphMeta
from ._result_size import DEFAULT_MAX_RESULT_BYTES, ResultBudget
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

    Args:
        max_result_bytes: the largest dense result (a Jacobian) asked for (default 2 GiB):
            above it the call raises `ResourceExhausted` before anything is computed, as
            `Client` does.
    """

    def __init__(self, *, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> None:
        try:
            import gradserve.autodiff as core
        except ImportError as exc:  # pragma: no cover - the client-only install
            raise ImportError(
                "LocalClient needs the gradserve server package (pip install gradserve)"
            ) from exc
        from gradserve.rpc.inprocess import InProcess

        self._core = core
        self._in_process = InProcess(_MAX_GRAPHS)
        self._errors = InProcess.ERRORS
        self._graphs: dict[str, Any] = {}  # GraphMeta.key -> the server's CachedGraph
        self._results = ResultBudget(max_result_bytes)

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Forget the cached programs."""
        self._graphs.clear()
        self._in_process.clear()

    def __repr__(self) -> str:
        return "LocalClient()"

    # -- graphs

    def _entry(self, meta: GraphMeta) -> Any:
        """The server's CachedGraph of a graph version, converted and validated on first use."""
        entry = self._graphs.get(meta.key)
        if entry is None:
            entry = self._in_process.graph(meta.proto)
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
            return self._in_process.program(entry, shapes)
        except self._errors as exc:
            raise self._converted(exc, call.meta, False) from None

    def _run(self, fn: Any, meta: GraphMeta, *args: Any) -> Any:
        """``fn(*args)`` (running a graph), with the core's and the server code's errors raised
        as the server would report them (the same exception classes, field violations and
        reasons)."""
        try:
            return fn(*args)
        except self._errors as exc:
            raise self._converted(exc, meta, True) from None

    def _converted(self, exc: Exception, meta: GraphMeta, running: bool) -> GradserveError:
        """A core or server error as the SDK exception a server's answer would raise."""
        err = self._in_process.rpc_error(exc, meta.input_dtypes, running=running)
        return error_class(err.code)(
            err.message,
            field_violations=getattr(err, "violations", ()),
            reason=err.reason,
            metadata=err.metadata,
        )

    def _compute(self, fn: Any, call: Call, *args: Any, **kwargs: Any) -> Any:
        """``fn(program, call.feeds, *args, **kwargs)`` on the call's Program (see
        `_methods.LocalRunner`)."""
        program = self._program(call)
        run = functools.partial(fn, **kwargs) if kwargs else fn
        return self._run(run, call.meta, program, call.feeds, *args)

    def _invoke(
        self, method: m.Method[Any, T], call: Any, timeout: float | None, parallel: int = 1
    ) -> T:
        # In process the core computes the whole result: shares would only add passes' set-up.
        assert method.local is not None, method.rpc.path
        self._results.elements(method, call)  # refused here over max_result_bytes
        return method.local(self, call)

    def _train(self, run: TrainCall, progress: bool, timeout: float | None) -> Run:
        """The run in this process: the same `Run`, results, checkpoints (which resume on a
        server too) and errors. ``timeout`` is the run's deadline in seconds."""
        meta = run.meta
        stop: list[Any] = []
        deadline = None if timeout is None else time.monotonic() + timeout

        def cancelled() -> bool:
            return bool(stop) or (deadline is not None and time.monotonic() > deadline)

        def events() -> Any:
            entry = self._run(self._entry, meta, meta)
            it = self._in_process.train(entry, run.request, run.feeds, run.arrays, cancelled)
            while True:
                try:
                    kind, ev = next(it)
                except StopIteration:
                    return
                except self._core.Cancelled:
                    if stop:  # the user's stop ends the run as a server's stream ends
                        return
                    raise error_class(grpc.StatusCode.DEADLINE_EXCEEDED)(
                        "deadline exceeded"
                    ) from None
                except self._errors as exc:
                    raise self._converted(exc, meta, True) from None
                if kind == "step":
                    yield "step", TrainStep(ev.step, ev.epoch, ev.loss, ev.grad_norm, ev.lr,
                                            ev.elapsed_seconds, ev.finite)  # fmt: skip
                elif kind == "checkpoint":
                    yield "checkpoint", Checkpoint(ev)
                else:
                    result = TrainResult(ev.steps, ev.final_loss, ev.elapsed_seconds)
                    yield "result", (ev.params, result)

        def cancel() -> None:
            stop.append(None)

        def replay(anchor: Checkpoint | None, step: int) -> Run:
            return self._train(run.replay(anchor, step), False, timeout)

        every = run.request.checkpoint_every
        return Run(events, cancel, replay, total=run.total, start=run.start,
                   checkpoint_every=every, progress=progress)  # fmt: skip
