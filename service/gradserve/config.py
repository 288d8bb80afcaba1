"""Every knob of the server, in one pydantic-settings model.

Values come from the environment (``GRADSERVE_*``), overridden by the flags of
``gradserve serve``, which are generated from the fields below (``max_message_bytes`` is
``--max-message-bytes``). An invalid value stops start-up with one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20
_FLOAT64_BYTES = 8
# Room left in a message for everything that is not Jacobian values (names, shapes, outputs).
_MESSAGE_OVERHEAD = 1 * MIB


def _default_worker_threads() -> int:
    return max(4, 2 * (os.cpu_count() or 1))


# The default --max-request-bytes: this share of the memory the process may use.
REQUEST_MEMORY_SHARE = 0.5


def machine_memory_bytes() -> int:
    """The memory this process may use: physical RAM, or the cgroup's limit when lower (a
    container's, which is what the kernel's OOM killer enforces)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


class Settings(BaseSettings):
    """The server's configuration. Every field is also a ``gradserve serve`` flag."""

    model_config = SettingsConfigDict(env_prefix="GRADSERVE_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_port: int = Field(
        9090, ge=0, le=65535, description="Prometheus /metrics HTTP port; 0 disables it."
    )
    worker_threads: int = Field(
        default_factory=_default_worker_threads,
        ge=1,
        description="Threads handling RPCs in each process (default: 2 x cores, at least 4);"
        " raised to max_concurrent_rpcs + 16 so that an admitted RPC never waits for a thread.",
    )
    workers: int = Field(
        1, ge=1, description="Server processes sharing the port with SO_REUSEPORT."
    )
    blas_threads: int = Field(
        0,
        ge=0,
        description="Threads of the BLAS library (numpy's matrix products) in each process."
        " 0 picks cores / workers / max_concurrent_rpcs (or worker_threads if that is"
        " unlimited), at least 1, so that RPC threads x BLAS threads <= cores.",
    )
    max_worker_restarts: int = Field(
        5,
        ge=0,
        description="With --workers > 1: worker processes that die are restarted, at most"
        " this many times within --worker-restart-window; one more death stops the server"
        " (exit 1).",
    )
    worker_restart_window: float = Field(
        60.0, gt=0, description="Seconds over which --max-worker-restarts is counted."
    )
    max_concurrent_rpcs: int = Field(
        64,
        ge=0,
        description="RPCs handled at once per process (health checks excepted); more get"
        " RESOURCE_EXHAUSTED at once. 0 means unlimited (calls then queue for a thread).",
    )
    max_message_bytes: int = Field(
        256 * MIB, ge=1024, description="Largest message received or sent, in bytes."
    )
    max_graph_nodes: int = Field(1_000_000, ge=1, description="Most nodes a graph may have.")
    max_tensor_elements: int = Field(
        1 << 28, ge=1, description="Most elements a single tensor (input or constant) may have."
    )
    max_jacobian_elements: int = Field(
        0,
        ge=0,
        description="Most elements of the dense Jacobians of one unary Jacobian response;"
        " larger ones need StreamJacobian. 0 picks what fits max_message_bytes in float64.",
    )
    max_stream_jacobian_elements: int = Field(
        1 << 31,
        ge=1,
        description="Most elements of the Jacobians of one StreamJacobian call (summed over its"
        " of x wrt pairs) or of the Hessian of one StreamHessian call; of a structured stream,"
        " its stored entries. Checked before the first block.",
    )
    max_request_bytes: int = Field(
        0,
        ge=0,
        description="Most bytes the values of one request's computation may hold at once,"
        " checked from the shapes before anything is allocated; more is RESOURCE_EXHAUSTED."
        " 0 picks half of the machine's memory (or of the container's limit).",
    )
    graph_cache_size: int = Field(256, ge=1, description="Graphs kept in the LRU graph cache.")
    graph_cache_bytes: int = Field(
        1 << 30,
        ge=0,
        description="About the most bytes the graph cache holds (constants and nodes of the"
        " graphs and their Programs); least recently used graphs go first.",
    )
    program_cache_bytes: int = Field(
        1 << 30,
        ge=0,
        description="About the most bytes the core's cache of compiled plans and derivative"
        " programs holds (process-wide, least recently used first).",
    )
    dataset_cache_bytes: int = Field(
        1 << 30, ge=0, description="Bytes of uploaded datasets kept in memory (LRU)."
    )
    shutdown_grace: float = Field(
        30.0, ge=0, description="Seconds in-flight RPCs get to finish after SIGTERM."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve TLS.")
    tls_key: Path | None = Field(None, description="PEM private key of --tls-cert.")
    tls_client_ca: Path | None = Field(
        None, description="PEM CA bundle: require client certificates it signed (mTLS)."
    )
    auth_token_file: Path | None = Field(
        None,
        description="File of bearer tokens, one per line: every RPC but health needs one.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO",
        description="Log level; failed RPCs are logged at WARNING (NOT_FOUND and CANCELLED, normal"
        " in SDK use, at INFO), every RPC at DEBUG (logfmt).",
    )

    @model_validator(mode="before")
    @classmethod
    def _upper_log_level(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("log_level"), str):
            data = {**data, "log_level": data["log_level"].upper()}
        return data

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key must be given together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{_flag(name)}: no such file: {path}")
        if self.auth_token_file is not None and not _has_token(self.auth_token_file):
            raise ValueError(f"--auth-token-file: no token in {self.auth_token_file}")
        if self.max_jacobian_elements == 0:
            fit = max(1, (self.max_message_bytes - _MESSAGE_OVERHEAD) // _FLOAT64_BYTES)
            self.max_jacobian_elements = fit
        if self.max_request_bytes == 0:
            self.max_request_bytes = int(machine_memory_bytes() * REQUEST_MEMORY_SHARE)
        return self


def _has_token(path: Path) -> bool:
    try:
        return any(line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError):
        return False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(prog: str = "gradserve serve") -> argparse.ArgumentParser:
    """An argparse parser with one flag per Settings field (defaults shown, env noted)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run the gradserve gRPC server. Every flag can also be set in the"
        " environment as GRADSERVE_<NAME>; flags override the environment.",
    )
    for name, info in Settings.model_fields.items():
        factory = info.default_factory
        default = factory() if factory is not None else info.default  # type: ignore[call-arg]
        shown = "unset" if default is None else default
        if name == "max_jacobian_elements":
            shown = "0 (fit max_message_bytes)"
        if name == "max_request_bytes":
            shown = "0 (half of the machine's memory)"
        parser.add_argument(
            _flag(name),
            dest=name,
            default=argparse.SUPPRESS,
            metavar=name.upper(),
            help=f"{info.description} (default: {shown}; env GRADSERVE_{name.upper()})",
        )
    return parser


def _one_line(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        where = f"{_flag(loc)} (GRADSERVE_{loc.upper()})" if loc else ""
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def load_settings(argv: Sequence[str] | None = None, prog: str = "gradserve serve") -> Settings:
    """Settings from the environment and ``argv``; exits 2 with one line on a bad value."""
    args = vars(build_parser(prog).parse_args(argv))
    try:
        return Settings(**args)
    except ValidationError as exc:
        print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
