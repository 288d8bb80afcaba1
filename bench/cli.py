"""The command line of `python -m bench`: choose workloads, run them, print and save the table."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.harness import (
    RESULTS_DIR,
    Row,
    Settings,
    cores_table,
    detail_table,
    environment,
    library_versions,
    rows_of,
    summary_table,
    write_json,
)

Runner = Callable[[Settings], "Row | list[Row]"]


def registry() -> dict[str, Runner]:
    """Workload groups in table order. Imports are lazy so `--only` loads only what it needs."""

    def core(name: str) -> Runner:
        def run(settings: Settings) -> Row | list[Row]:
            from bench import core as mod

            return mod.WORKLOADS[name](settings)

        return run

    def lazy(module: str, fn: str) -> Runner:
        def run(settings: Settings) -> Row | list[Row]:
            mod = __import__(f"bench.{module}", fromlist=[fn])
            return getattr(mod, fn)(settings)

        return run

    return {
        "W1": core("W1"),
        "W2": core("W2"),
        "W3": core("W3"),
        "W4": core("W4"),
        "M1": core("M1"),
        "S1": lazy("sparse", "s1"),
        "S2": lazy("sparse", "s2"),
        "S3": lazy("sparse", "s3"),
        "H1": lazy("sparse", "h1"),
        "H2": lazy("sparse", "h2"),
        "RPC": lazy("rpc", "run"),
        "W5": lazy("train", "run"),
        "WORKERS": lazy("workers", "run"),
        "CONV": lazy("conv", "run"),
        "MODELS": lazy("models", "run"),
    }


ALIASES = {
    "K1": "CONV",
    "K2": "CONV",
    "K3": "CONV",
    "C1": "MODELS",
    "C2": "MODELS",
    "T1": "MODELS",
    "W6": "MODELS",
    "S1B": "S1",
    "H2B": "H2",
    "R1": "RPC",
    "R2": "RPC",
    "R3": "RPC",
    "W5B": "W5",
    "W4B": "W4",
    "WK": "WORKERS",
    "SH": "WORKERS",
    "WKC": "WORKERS",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--only",
        help="comma-separated workloads: W1,W2,W3,W4,M1,S1,S2,S3,H1,H2,RPC (or R1,R2,R3),W5,"
        "WORKERS (or WK, SH, WKc), CONV (or K1,K2,K3), MODELS (or C1,C2,T1,W6)",
    )
    p.add_argument("--quick", action="store_true", help="few repetitions (the smoke test)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--rounds", type=int, help="interleaved samples per contender")
    p.add_argument(
        "--cores",
        default="1,all",
        help="the cores every contender is pinned to: 1, N or all; several (1,all, the "
        "default) run once each, side by side (see __main__)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="threads per library (BLAS, OpenMP, XLA; default one per core); 0 keeps the "
        "libraries' defaults",
    )
    p.add_argument("--no-detail", action="store_true", help="print the summary table only")
    return p.parse_args(argv)


def select(only: str | None) -> list[str]:
    names = list(registry())
    if not only:
        return names
    wanted = []
    for item in only.split(","):
        key = item.strip().upper()
        key = ALIASES.get(key, key)
        if key not in names:
            raise SystemExit(f"unknown workload {item!r}; choose from {', '.join(names)}")
        if key not in wanted:
            wanted.append(key)
    return [n for n in names if n in wanted]


def run(names: list[str], settings: Settings, log: Callable[[str], None] = print) -> list[Row]:
    runners = registry()
    rows: list[Row] = []
    for name in names:
        t0 = time.perf_counter()
        log(f"-- {name} ...")
        try:
            out = runners[name](settings)
        except Exception as exc:  # one broken group must not hide the others
            traceback.print_exc(file=sys.stderr)
            out = Row(name, "(failed)", "s", "gradserve", None, "-", None)
            out.notes["gradserve"] = f"{type(exc).__name__}: {exc}"[:200]
        new = out if isinstance(out, list) else [out]
        rows += new
        log(f"   {name} done in {time.perf_counter() - t0:.1f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.make(args.quick)
    if args.rounds:
        settings.rounds = args.rounds
    names = select(args.only)
    env = environment()
    env["libraries"] = library_versions()
    cores = len(env["affinity"])
    threads = cores if args.threads is None else args.threads
    env["settings"] = {"quick": settings.quick, "rounds": settings.rounds, "threads": threads}
    env["thread_env"] = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
        if k in os.environ
    }
    print(
        f"gradserve benchmarks, {env['date']}: {env['cpu']}, {env['cores']} cores, "
        f"numpy {env.get('numpy')}, BLAS {env.get('blas')}; pinned to cores "
        f"{env['affinity']}, threads per library: {threads or 'library defaults'}"
    )
    env["load_average_start"] = os.getloadavg()
    rows = run(names, settings)
    env["load_average_end"] = os.getloadavg()
    print(
        f"\nload average (1, 5, 15 min): start {env['load_average_start']}, "
        f"end {env['load_average_end']} on {env['cores']} cores"
    )
    print()
    print(summary_table(rows))
    if not args.no_detail:
        print()
        print(detail_table(rows))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = [RESULTS_DIR / "latest.json", RESULTS_DIR / f"run-{stamp}.json"]
    if args.json:
        paths.append(args.json)
    for path in paths:
        write_json(path, rows, env)
    print(f"\nresults: {paths[-1]}")
    return 0


def _without(argv: list[str], *options: str) -> list[str]:
    """argv without the given options and their values."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in options:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in options)):
            out.append(arg)
    return out


def compare_cores(argv: list[str], settings: list[str]) -> int:
    """Run the benchmark once per core setting, each in a fresh process (the pinning and the
    thread counts are set before the libraries load), then print their ratios side by side
    and save every run's results in one file."""
    args = parse_args(argv)
    rest = _without(argv, "--cores", "--json")
    runs: dict[str, dict] = {}
    code = 0
    with tempfile.TemporaryDirectory() as tmp:
        for setting in settings:
            out = Path(tmp) / f"{setting}.json"
            cmd = [sys.executable, "-m", "bench", *rest, "--cores", setting, "--json", str(out)]
            print(f"== --cores {setting}", flush=True)
            code = max(code, subprocess.run(cmd).returncode)
            if out.exists():
                runs[setting] = json.loads(out.read_text())
    print()
    print(cores_table({s: rows_of(data) for s, data in runs.items()}))
    paths = [RESULTS_DIR / f"cores-{time.strftime('%Y%m%d-%H%M%S')}.json"]
    if args.json:
        paths.append(args.json)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(runs, indent=1))
    print(f"\nresults: {paths[-1]}")
    return code
