"""Timing, medians, ratio tables and JSON output, shared by every benchmark module.

Method: every contender of one workload is a zero-argument callable. After a warm-up that also
calibrates how many calls make one sample (a sample lasts at least `min_sample` seconds), the
contenders are timed in interleaved rounds (A B C A B C ...), so that noise on this shared
machine hits them all alike. A contender's figure is the median of its per-call sample times,
and every ratio is taken between medians measured in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CORE_SETTINGS = ("1", "all")  # what `--cores` compares by default, side by side


# ----------------------------------------------------------------------------------------------
# Cores and threads: set before numpy, torch or jax loads (bench/__main__.py)


def pin_cores(setting: str) -> tuple[int, ...]:
    """Pin this process to the cores `setting` names, of those it may run on now: "all", or
    a count N (the first N). Every process it starts inherits the mask (servers, M1's and the
    workers' clients), so every timed contender runs on the same cores."""
    allowed = sorted(os.sched_getaffinity(0))
    count = len(allowed) if setting == "all" else int(setting)
    if not 1 <= count <= len(allowed):
        raise SystemExit(f"--cores {setting}: this process may run on {len(allowed)} cores")
    cores = tuple(allowed[:count])
    os.sched_setaffinity(0, cores)
    return cores


def thread_environment(threads: int) -> dict[str, str]:
    """The environment that gives each library `threads` threads: BLAS, OpenMP (torch), XLA's
    Eigen pool only when 1 (XLA has no thread-count setting of its own), and the gradserve
    servers' BLAS (GRADSERVE_BLAS_THREADS: the server's own default would keep 1 per RPC
    thread); idle threads of OpenMP and OpenBLAS sleep rather than spin."""
    env = {
        var: str(threads) for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    }
    env["GRADSERVE_BLAS_THREADS"] = str(threads)
    # Idle pool threads sleep at once instead of spinning (OpenMP's default waits actively,
    # OpenBLAS's for 2^28 cycles): a pool spinning after its call would take a core from the
    # next contender of the interleaved rounds (torch's K1 went from 2.7 ms to 106 ms).
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    env["OPENBLAS_THREAD_TIMEOUT"] = "4"  # 2^4 cycles, OpenBLAS's shortest
    if threads == 1:
        xla = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla}".strip()
    return env


@dataclass
class Settings:
    """How hard to try: `quick` is for the smoke test and for a fast look."""

    quick: bool = False
    rounds: int = 15  # interleaved samples per contender
    min_sample: float = 0.02  # seconds per sample, at least
    warmup: int = 3

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(quick=True, rounds=3, min_sample=0.002, warmup=1)
        return cls()


@dataclass
class Contender:
    """One way of computing a workload. `fn` is None when it cannot run here (`note` says why)."""

    name: str
    fn: Callable[[], Any] | None
    note: str = ""


@dataclass
class Row:
    """The figures of one workload: gradserve's contenders and the anchors, per-call medians."""

    id: str
    workload: str
    unit: str  # "s" for time per call; other units (B, req/s, steps/s) are stated as such
    gradserve: str  # the name of the contender that the target judges
    target_anchor: str | None  # the anchor the ratio is taken against (None: absolute target)
    target: str  # readable, e.g. "<= 1.0x torch eager"
    limit: float | None  # the ratio (or absolute figure) the target allows
    higher_is_better: bool = False  # throughput-like figures: the ratio must be >= limit
    figures: dict[str, float | None] = field(default_factory=dict)
    spread: dict[str, float] = field(default_factory=dict)  # (p75 - p25) / median, per contender
    notes: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    ratio_override: float | None = None  # for rows whose "ratio" is not gradserve / anchor

    @property
    def ratio(self) -> float | None:
        if self.ratio_override is not None:
            return self.ratio_override
        gs = self.figures.get(self.gradserve)
        if self.target_anchor is None:
            return None
        anchor = self.figures.get(self.target_anchor)
        if gs is None or anchor is None or anchor == 0:
            return None
        return gs / anchor

    @property
    def met(self) -> bool | None:
        if self.limit is None:
            return None
        if self.target_anchor is None and self.ratio_override is None:
            value = self.figures.get(self.gradserve)  # an absolute target
        else:
            value = self.ratio
        if value is None:
            return None
        return value >= self.limit if self.higher_is_better else value <= self.limit


def calibrate(fn: Callable[[], Any], min_sample: float, warmup: int) -> int:
    """Calls per sample so that one sample lasts at least `min_sample` seconds."""
    fn()  # the first call may compile or fill caches: never timed
    for _ in range(warmup):
        t0 = time.perf_counter()
        fn()
        if time.perf_counter() - t0 > 5 * min_sample:
            return 1  # slow enough that one call is one sample; no more warm-up needed
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_sample or n >= 1 << 20:
            return n
        n = max(n * 2, math.ceil(n * min_sample / max(elapsed, 1e-9) * 1.1))


def time_interleaved(
    contenders: Sequence[Contender], settings: Settings
) -> tuple[dict[str, float | None], dict[str, float], dict[str, str]]:
    """(median seconds per call, relative spread, notes) for each contender, timed A B A B."""
    figures: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    runnable: list[tuple[Contender, int]] = []
    for c in contenders:
        if c.fn is None:
            figures[c.name] = None
            notes[c.name] = c.note or "not available"
            continue
        try:
            runnable.append((c, calibrate(c.fn, settings.min_sample, settings.warmup)))
        except Exception as exc:  # a contender that fails is reported, not fatal
            figures[c.name] = None
            notes[c.name] = f"failed: {type(exc).__name__}: {exc}"[:200]
    samples: dict[str, list[float]] = {c.name: [] for c, _ in runnable}
    for _ in range(settings.rounds):
        for c, n in runnable:
            fn = c.fn
            assert fn is not None
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            samples[c.name].append((time.perf_counter() - t0) / n)
    spread: dict[str, float] = {}
    for name, values in samples.items():
        figures[name] = statistics.median(values)
        spread[name] = relative_iqr(values)
    return figures, spread, notes


def threaded_rate(
    fns: Sequence[Callable[[], Any]], *, calls_each: int = 0, seconds: float = 0.0
) -> float:
    """Calls per second of one thread per callable, started together: each makes `calls_each`
    calls, or (with `seconds`) calls until that much time has passed, so that a thread whose
    calls are served faster (a less loaded server process) is not left idle. The first error
    of any thread is raised after all have ended."""
    barrier = threading.Barrier(len(fns) + 1)
    done = [0] * len(fns)
    errors: list[BaseException] = []
    end = 0.0

    def work(i: int, fn: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            while (time.perf_counter() < end) if seconds else (done[i] < calls_each):
                fn()
                done[i] += 1
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=work, args=item) for item in enumerate(fns)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    end = t0 + seconds
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(done) / elapsed


def relative_iqr(values: Sequence[float]) -> float:
    if len(values) < 4:
        return 0.0
    q = statistics.quantiles(values, n=4)
    med = statistics.median(values)
    return (q[2] - q[0]) / med if med else 0.0


# ----------------------------------------------------------------------------------------------
# Formatting


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if value >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.3g} s"
    if unit == "B":
        for scale, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if value >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.0f} B"
    return f"{value:.4g} {unit}"


def fmt_ratio(row: Row) -> str:
    r = row.ratio
    if r is None:
        return "n/a"
    return f"{r:.2f}x"


def fmt_met(row: Row) -> str:
    met = row.met
    return "n/a" if met is None else ("met" if met else "NOT MET")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, sep, *body])


def summary_table(rows: Sequence[Row]) -> str:
    """One line per workload: gradserve, every anchor, the ratio against the target anchor."""
    out = []
    for row in rows:
        gs = row.figures.get(row.gradserve)
        anchors = [
            f"{name} {fmt_value(v, row.unit)}"
            for name, v in row.figures.items()
            if name != row.gradserve and not name.startswith("gradserve")
        ]
        others = [
            f"{name} {fmt_value(v, row.unit)}"
            for name, v in row.figures.items()
            if name != row.gradserve and name.startswith("gradserve")
        ]
        gs_text = fmt_value(gs, row.unit)
        if gs is None and row.gradserve in row.notes:
            gs_text = f"n/a ({row.notes[row.gradserve]})"
        out.append(
            [
                row.id,
                row.workload,
                gs_text + (f" [{'; '.join(others)}]" if others else ""),
                "; ".join(anchors) or "-",
                fmt_ratio(row),
                row.target,
                fmt_met(row),
            ]
        )
    return _table(
        ["id", "workload", "gradserve (median)", "anchors (median)", "ratio", "target", "status"],
        out,
    )


def cores_table(runs: dict[str, Sequence[Row]]) -> str:
    """One line per workload: gradserve, the target anchor and the ratio with each core
    setting (runs: setting -> its rows), side by side."""
    settings = list(runs)
    by_id = [{row.id + row.workload: row for row in rows} for rows in runs.values()]
    out = []
    for key, first in by_id[0].items() if by_id else ():
        line = [first.id, first.workload, first.target]
        for rows in by_id:
            row = rows.get(key)
            if row is None:
                line += ["-", "-", "-"]
                continue
            gs, anchor = row.figures.get(row.gradserve), row.figures.get(row.target_anchor or "")
            line += [
                f"{fmt_value(gs, row.unit)} / {fmt_value(anchor, row.unit)}",
                fmt_ratio(row),
                fmt_met(row),
            ]
        out.append(line)
    headers = ["id", "workload", "target"]
    for s in settings:
        cores = "1 core" if s == "1" else f"{s} cores"
        headers += [f"gradserve / anchor ({cores})", f"ratio ({cores})", f"status ({cores})"]
    return _table(headers, out)


def detail_table(rows: Sequence[Row]) -> str:
    """Every contender of every workload, with its spread and notes."""
    out = []
    for row in rows:
        gs = row.figures.get(row.gradserve)
        for name, value in row.figures.items():
            rel = ""
            if gs is not None and value and row.unit == "s":
                rel = f"{gs / value:.2f}x"
            spread = row.spread.get(name)
            out.append(
                [
                    row.id,
                    name + (" *" if name == row.gradserve else ""),
                    fmt_value(value, row.unit),
                    f"±{spread * 50:.0f}%" if spread else "",
                    rel,
                    row.notes.get(name, ""),
                ]
            )
    return _table(["id", "contender", "median", "IQR/2", "gradserve/this", "note"], out)


# ----------------------------------------------------------------------------------------------
# Environment and JSON


def environment() -> dict[str, Any]:
    """The machine and the libraries, as the figures should be quoted with."""
    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "openblas_env": {
            k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
        },
    }
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def library_versions() -> dict[str, str]:
    versions = {}
    for mod in ("torch", "jax", "autograd", "grpc"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except ImportError:
            continue
    return versions


def rows_of(data: dict[str, Any]) -> list[Row]:
    """The Rows of a results file written by `write_json`."""
    names = {f.name for f in dataclasses.fields(Row)}
    return [Row(**{k: v for k, v in row.items() if k in names}) for row in data["rows"]]


def write_json(path: Path, rows: Sequence[Row], env: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "environment": env,
        "rows": [
            {
                **dataclasses.asdict(row),
                "ratio": row.ratio,
                "met": row.met,
            }
            for row in rows
        ],
    }
    path.write_text(json.dumps(data, indent=1, default=str))
