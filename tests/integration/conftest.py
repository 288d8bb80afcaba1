"""Fixtures: real gradserve servers on ephemeral ports.

- ``server``: a shared in-process server (default settings, metrics off); ``.address``,
  ``.port``, ``.servicer`` (its graph cache), ``.health``.
- ``make_server(**settings)``: more in-process servers with other settings, stopped at the end
  of the test.
- ``stub`` / ``channel``: a raw ``GradientStub`` and channel connected to ``server``.
- ``server_process(*flags)``: ``python -m gradserve serve --port 0`` as a subprocess
  (``wire.ServerProcess``: ``.address``, ``.stop()``, ``.restart()``), stopped at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gradserve.config import Settings
from gradserve.rpc import GradientServicer
from gradserve.server import create_server
from gradserve_client.proto import gradient_service_pb2_grpc
from wire import ServerProcess

BIG = 256 << 20
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", BIG),
    ("grpc.max_send_message_length", BIG),
]


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    servicer: GradientServicer
    health: object
    settings: Settings

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stub(self) -> tuple[grpc.Channel, gradient_service_pb2_grpc.GradientStub]:
        channel = grpc.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        return channel, gradient_service_pb2_grpc.GradientStub(channel)


def start_server(**overrides: object) -> RunningServer:
    settings = Settings(host="127.0.0.1", port=0, metrics_port=0, **overrides)
    servicer = GradientServicer(settings)
    server, port, health = create_server(settings, servicer=servicer)
    return RunningServer(server, port, servicer, health, settings)


@pytest.fixture(scope="session")
def server() -> Iterator[RunningServer]:
    running = start_server()
    yield running
    running.server.stop(None)


@pytest.fixture(scope="session")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(server.address, options=CHANNEL_OPTIONS)
    yield ch
    ch.close()


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> gradient_service_pb2_grpc.GradientStub:
    return gradient_service_pb2_grpc.GradientStub(channel)


@pytest.fixture
def make_server() -> Iterator:
    started: list[RunningServer] = []

    def make(**overrides: object) -> RunningServer:
        running = start_server(**overrides)
        started.append(running)
        return running

    yield make
    for running in started:
        running.server.stop(None)


@pytest.fixture
def server_process() -> Iterator:
    started: list[ServerProcess] = []

    def make(*flags: str, env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(*flags, env=env)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        proc.stop()
