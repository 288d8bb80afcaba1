"""gradserve.metrics: the names, types and labels the dashboard, the alerts and the
operators rely on, the metrics server, and prometheus-client's multiprocess mode."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    # family name: (type, label names)
    "gradserve_requests": ("counter", ("method", "code")),
    "gradserve_refusals": ("counter", ("method", "limit")),
    "gradserve_request_duration_seconds": ("histogram", ("method",)),
    "gradserve_inflight_requests": ("gauge", ()),
    "gradserve_max_concurrent_rpcs": ("gauge", ()),
    "gradserve_graph_cache_hits": ("counter", ()),
    "gradserve_graph_cache_misses": ("counter", ()),
    "gradserve_dataset_cache_hits": ("counter", ()),
    "gradserve_dataset_cache_misses": ("counter", ()),
    "gradserve_jacobian_elements": ("histogram", ()),
    "gradserve_train_steps": ("counter", ()),
    "gradserve_train_active_streams": ("gauge", ()),
    "gradserve_request_message_bytes": ("histogram", ("method",)),
    "gradserve_response_message_bytes": ("histogram", ("method",)),
    "gradserve_build_info": ("gauge", ("version",)),
}


def python(code: str, env_extra: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "service"), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_names_types_and_labels() -> None:
    out = python(
        "import json, gradserve.metrics as m\n"
        "fams = {f.name: f.type for f in m.REGISTRY.collect()}\n"
        "labels = {c._name: list(c._labelnames) for c in vars(m).values()\n"
        "          if hasattr(c, '_labelnames') and hasattr(c, '_name')}\n"
        "print(json.dumps([fams, labels]))"
    )
    families, labels = json.loads(out)
    for name, (kind, labelnames) in EXPECTED.items():
        assert families.get(name) == kind, name
        assert tuple(labels[name]) == labelnames, name
    # The default process metrics are there too.
    assert "process_cpu_seconds" in families and "process_resident_memory_bytes" in families


def test_buckets_cover_the_ranges() -> None:
    from gradserve import metrics

    assert metrics.DURATION_BUCKETS[0] <= 1e-4 and metrics.DURATION_BUCKETS[-1] >= 60
    assert list(metrics.DURATION_BUCKETS) == sorted(metrics.DURATION_BUCKETS)
    assert metrics.BYTES_BUCKETS[-1] >= 4 * 1024 * 1024


def test_no_grpc_or_protobuf_import() -> None:
    out = python(
        "import sys, gradserve.metrics\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google')))"
    )
    assert out.strip() == "[]"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_start_metrics_server_serves_the_registry() -> None:
    port = free_port()
    code = (
        "import sys, time, urllib.request, gradserve.metrics as m\n"
        f"m.start_metrics_server({port}, '127.0.0.1')\n"
        "m.REQUESTS.labels('/gradserve.v1.Gradient/Evaluate', 'OK').inc()\n"
        f"body = urllib.request.urlopen('http://127.0.0.1:{port}/metrics', timeout=5).read()\n"
        "sys.stdout.write(body.decode())"
    )
    body = python(code)
    sample = 'gradserve_requests_total{code="OK",method="/gradserve.v1.Gradient/Evaluate"} 1.0'
    assert sample in body
    assert "gradserve_build_info{version=" in body
    assert "process_cpu_seconds_total" in body


def multiprocess_exposition(env: dict[str, str], dead: tuple[int, ...] = ()) -> str:
    """The exposition text of multiprocess mode, read in a fresh process of ``env`` after it
    marks the ``dead`` worker pids dead (as the parent does)."""
    code = (
        "import gradserve.metrics as m\n"
        "from prometheus_client import generate_latest\n"
        f"for pid in {list(dead)!r}:\n"
        "    m.mark_process_dead(pid)\n"
        "import sys; sys.stdout.write(generate_latest(m.exposition_registry()).decode())"
    )
    return python(code, env)


def test_multiprocess_mode_sums_workers(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    worker = (
        "import os, gradserve.metrics as m\n"
        "assert m.is_multiprocess()\n"
        "m.REQUESTS.labels('/gradserve.v1.Gradient/Jacobian', 'OK').inc(3)\n"
        "m.INFLIGHT_REQUESTS.inc(2)\n"
        "m.MAX_CONCURRENT_RPCS.set(32)\n"
        "m.TRAIN_STEPS.inc(5)\n"
        "print(os.getpid())"
    )
    pids = [int(python(worker, env)) for _ in range(2)]

    def scrape(*dead: int) -> dict[str, float]:
        samples = {}
        for line in multiprocess_exposition(env, dead).splitlines():
            if line.startswith("gradserve_") or line.startswith("process_"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    live = scrape()
    key = 'gradserve_requests_total{code="OK",method="/gradserve.v1.Gradient/Jacobian"}'
    assert live[key] == 6.0
    assert live["gradserve_train_steps_total"] == 10.0
    assert live["gradserve_max_concurrent_rpcs"] == 64.0
    assert live["gradserve_inflight_requests"] == 4.0
    assert live[f'gradserve_build_info{{version="{_version()}"}}'] == 1.0
    assert "process_cpu_seconds_total" in live  # of the exporting process

    # After the parent marks the workers dead, the live gauges forget them; the
    # counters keep their totals.
    dead = scrape(*pids)
    assert dead[key] == 6.0
    assert dead.get("gradserve_inflight_requests", 0.0) == 0.0
    assert dead.get("gradserve_max_concurrent_rpcs", 0.0) == 0.0


def test_multiprocess_mode_records_the_hot_path_in_the_files(tmp_path: Path) -> None:
    """Per-thread tallies would stay in the worker: there the recorders are the values."""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    code = (
        "import gradserve.metrics as m\n"
        "child = m.REQUEST_DURATION.labels('/gradserve.v1.Gradient/Evaluate')\n"
        "assert m.recorder(child) is child\n"
        "assert m.recorder(m.INFLIGHT_REQUESTS) is m.INFLIGHT_REQUESTS\n"
        "m.recorder(m.REQUESTS.labels('/gradserve.v1.Gradient/Evaluate', 'OK')).inc(2)\n"
    )
    python(code, env)
    sample = 'gradserve_requests_total{code="OK",method="/gradserve.v1.Gradient/Evaluate"} 2.0'
    assert sample in multiprocess_exposition(env)


def _version() -> str:
    from gradserve import metrics

    return metrics.VERSION


def test_clean_multiproc_dir_keeps_only_own_files(tmp_path: Path) -> None:
    stale = tmp_path / "counter_999999.db"
    stale.write_bytes(b"")
    out = python(
        "import os, gradserve.metrics as m\n"
        "m.clean_multiproc_dir()\n"
        "import json\n"
        "d = os.environ['PROMETHEUS_MULTIPROC_DIR']\n"
        "print(json.dumps([sorted(os.listdir(d)), os.getpid()]))",
        {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    )
    assert not stale.exists()
    files, pid = json.loads(out)
    assert files and all(f.endswith(f"_{pid}.db") for f in files)


def test_names_follow_prometheus_conventions() -> None:
    """Every family gradserve.metrics registers (not this file's table): snake_case under
    gradserve_, base units as suffixes, `_total` on counters only, histograms with buckets."""
    out = python(
        "import json, gradserve.metrics as m\n"
        "from prometheus_client.metrics import MetricWrapperBase\n"
        "for c in vars(m).values():  # one child each, so labelled families have samples\n"
        "    if isinstance(c, MetricWrapperBase) and c._labelnames:\n"
        "        c.labels(*['x'] * len(c._labelnames))\n"
        "print(json.dumps([[f.name, f.type, sorted({s.name for s in f.samples}),\n"
        "                   sorted({k for s in f.samples for k in s.labels})]\n"
        "                  for f in m.REGISTRY.collect()]))"
    )
    families = {name: (kind, samples, labels) for name, kind, samples, labels in json.loads(out)}
    ours = {n: v for n, v in families.items() if not n.startswith(("process_", "python_"))}
    assert set(EXPECTED) <= set(ours)
    for name, (kind, samples, labels) in ours.items():
        assert re.fullmatch(r"gradserve_[a-z][a-z0-9]*(_[a-z0-9]+)*", name), name
        assert not name.endswith(("_total", "_count", "_sum", "_bucket")), name
        if "duration" in name or "latency" in name or "seconds" in name:
            assert name.endswith("_seconds"), name
        if "bytes" in name:
            assert name.endswith("_bytes"), name
        if kind == "counter":
            assert f"{name}_total" in samples, (name, samples)
        elif kind == "histogram":
            assert {f"{name}_bucket", f"{name}_count", f"{name}_sum"} <= set(samples), name
        else:
            assert kind == "gauge" and samples == [name], (name, kind, samples)
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", label) for label in labels), labels
