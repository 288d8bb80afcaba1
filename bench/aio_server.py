"""gradserve's servicer on other server stacks, for the stack comparison of R1-R3 (issue 11 §2).

`python -m bench.aio_server --stack S` prints "listening on HOST:PORT". No interceptors on any
stack (grpc.aio needs interceptors of its own), so the three compare like with like:

- ``threads``: today's server (`create_server`: a grpc.Server and its thread pool) without
  interceptors;
- ``aio-pool``: a grpc.aio server running the same synchronous handlers in its
  ``migration_thread_pool``;
- ``aio-executor``: a grpc.aio server whose unary handlers are coroutines awaiting the
  synchronous handler in ``loop.run_in_executor``.

And ``floor``, the RPC rows' floor: the shipped server (`create_server`, with its interceptors)
whose Evaluate answers a request by graph_id with the response it gave the first such request
for that id: what the server costs around the servicer's work (decode, the plan, encode).

Only the unary RPCs are adapted (all that R1-R3 call); streams are left as they are.

The servicer asks its context ``is_active`` and ``code``, which neither grpc.aio's context nor
the one it gives handlers in the migration pool has; `_Context` adds them.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from gradserve.config import Settings
from gradserve.rpc import SERVICE_NAME, GradientServicer
from gradserve.rpc.handlers import method_handlers

from bench.servers import FLOOR, MAX_MESSAGE, STACKS

OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.so_reuseport", 0),
]


class _Context:
    """The synchronous ServicerContext calls the servicer makes, over grpc.aio's contexts;
    ``done()`` tells whether the call has ended. Errors are not timed: no status is kept."""

    __slots__ = ("_context", "_done")

    def __init__(self, context: Any, done: Callable[[], bool]) -> None:
        self._context = context
        self._done = done

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    def is_active(self) -> bool:
        return not self._done()

    def code(self) -> None:
        return None

    def abort_with_status(self, status: Any) -> None:
        raise RuntimeError(f"status {status.code}: {status.details}")


class _Prebuilt(GradientServicer):
    """Evaluate by graph_id answered with the first response for that id (R1's and R3's
    requests repeat one call, so the answer is the right one)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._answers: dict[str, Any] = {}

    def Evaluate(self, request, context):
        if request.WhichOneof("graph_source") != "graph_id":
            return super().Evaluate(request, context)
        answer = self._answers.get(request.graph_id)
        if answer is None:
            answer = self._answers[request.graph_id] = super().Evaluate(request, context)
        return answer


def _in_pool(handler: grpc.RpcMethodHandler) -> Any:
    behavior = handler.unary_unary

    def unary(request: Any, context: Any) -> Any:
        ended: list[bool] = []
        context.add_callback(lambda: ended.append(True))
        return behavior(request, _Context(context, lambda: bool(ended)))

    return handler._replace(unary_unary=unary)


def _in_executor(handler: grpc.RpcMethodHandler, pool: futures.Executor) -> Any:
    behavior = handler.unary_unary
    loop = asyncio.get_running_loop()

    async def unary(request: Any, context: Any) -> Any:
        sync_context = _Context(context, context.done)
        return await loop.run_in_executor(pool, behavior, request, sync_context)

    return handler._replace(unary_unary=unary)


async def _serve_aio(stack: str, settings: Settings, port: int) -> None:
    pool = futures.ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="gradserve-rpc")
    handlers = method_handlers(GradientServicer(settings))
    wrap = _in_pool if stack == "aio-pool" else functools.partial(_in_executor, pool=pool)
    handlers = {
        name: wrap(h) if not (h.request_streaming or h.response_streaming) else h
        for name, h in handlers.items()
    }
    server = grpc.aio.server(migration_thread_pool=pool, options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"{stack} listening on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--stack", choices=(*STACKS, FLOOR), required=True)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    settings = Settings(host="127.0.0.1", port=args.port, metrics_port=0)
    if args.stack in ("threads", FLOOR):
        from gradserve.server import create_server

        # The floor keeps the shipped interceptors; the threads stack runs without any.
        stack = {"servicer": _Prebuilt(settings)} if args.stack == FLOOR else {"interceptors": []}
        server, bound, _ = create_server(settings, **stack)
        print(f"{args.stack} listening on 127.0.0.1:{bound}", flush=True)
        server.wait_for_termination()  # until the benchmark's SIGTERM
        return 0
    asyncio.run(_serve_aio(args.stack, settings, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
