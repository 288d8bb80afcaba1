"""The RPC anchor: a bare grpcio server whose one method returns the request bytes unchanged.

A generic handler with no (de)serializers, so the bytes are never parsed: the cost is grpcio's
own. Same thread-pool size and message limits as the gradserve server.
`python -m bench.echo_server [--port N]` prints "echo listening on HOST:PORT".
"""

from __future__ import annotations

import argparse
import signal
import threading
from concurrent import futures

import grpc

from bench.servers import MAX_MESSAGE, WORKER_THREADS

SERVICE = "bench.Echo"
METHOD = f"/{SERVICE}/Echo"


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    return request


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--threads", type=int, default=WORKER_THREADS)
    args = p.parse_args()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=args.threads),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
        ],
    )
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"echo listening on 127.0.0.1:{port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
