"""Checks of deploy/ against the real tools.

- every kustomization renders with ``kubectl kustomize`` and validates with
  ``kubernetes-validate --strict``;
- hadolint finds nothing in the Dockerfile;
- ``promtool check config`` / ``check rules`` / ``test rules`` pass;
- every ``gradserve_*`` series the dashboard and the rules query exists in the
  exposition of ``gradserve.metrics``.

The tools come from ``.ci/install-tools.sh``. Under ``CI=true`` a missing tool fails
the test; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
PROM_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROM_RULES = DEPLOY / "prometheus" / "alerts.yml"
PROM_RULES_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "gradserve-dashboard.json"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# Validate against the oldest Kubernetes we support (gRPC probes are GA since 1.27,
# the preStop `sleep` action and matchLabelKeys are on by default since 1.30) and
# the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ("1.30", "1.37")

# Custom resources kubernetes-validate has no schema for. It only prints a WARN for
# an unknown kind and exits 0, so every other WARN is turned into a failure below,
# and these kinds are validated against the schemas in tests/deploy/schemas/.
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
}

IN_CI = os.environ.get("CI", "").lower() == "true"


def tool(name: str) -> str:
    """Path of a tool: the venv's bin first (PyPI tools), then PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found (run .ci/install-tools.sh)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


# --------------------------------------------------------------------------------
# Kubernetes


KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


@cache
def render(directory: Path) -> str:
    result = run([tool("kubectl"), "kustomize", str(directory)])
    assert result.returncode == 0, f"kubectl kustomize {directory}:\n{result.stderr}"
    return result.stdout


def objects(directory: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(directory)) if d]


def one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def test_kustomizations_found() -> None:
    names = {p.relative_to(K8S).as_posix() for p in KUSTOMIZATIONS}
    assert {"base", "overlays/dev", "overlays/prod"} <= names


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_kustomization_validates_strict(directory: Path, tmp_path: Path) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render(directory))
    args = [tool("kubernetes-validate"), "--strict", "--quiet"]
    for version in K8S_VERSIONS:
        args += ["-k", version]
    result = run([*args, str(rendered)])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    crd_kinds = {kind for _, kind in CRD_SCHEMAS}
    crd_api_versions = {api for api, _ in CRD_SCHEMAS}
    for line in output.splitlines():
        if line.startswith("WARN"):
            # Only the known CRDs may lack a schema; anything else (a misspelt kind or
            # apiVersion) would otherwise pass silently.
            match = re.search(r"kind (\S+) with api version (\S+) ", line)
            assert match, line
            assert match.group(1) in crd_kinds and match.group(2) in crd_api_versions, line
        else:
            assert not line.startswith(("ERROR", "FATAL")), line


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_custom_resources_match_their_schema(directory: Path) -> None:
    for obj in objects(directory):
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_SCHEMAS:
            schema = json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())
            jsonschema.Draft202012Validator(schema).validate(obj)
        else:
            assert "coreos.com" not in obj["apiVersion"], f"no schema for {key}"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_deployment_contract(directory: Path) -> None:
    objs = objects(directory)
    deployment = one(objs, "Deployment", "gradserve")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = pod["containers"]

    # Native gRPC probes on 50051.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == 50051, probe

    # Security context.
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] > 0
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert csc["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["topologySpreadConstraints"]
    for constraint in pod["topologySpreadConstraints"]:
        assert constraint["labelSelector"]["matchLabels"].items() <= labels.items()

    # Settings from the generated ConfigMap, and a drain that fits the grace period.
    config = one(objs, "ConfigMap")
    refs = [e["configMapRef"]["name"] for e in container["envFrom"]]
    assert refs == [config["metadata"]["name"]]
    settings = config["data"]
    for key in ("GRADSERVE_HOST", "GRADSERVE_PORT", "GRADSERVE_METRICS_PORT", "GRADSERVE_WORKERS"):
        assert key in settings
    assert settings["GRADSERVE_PORT"] == "50051" and settings["GRADSERVE_METRICS_PORT"] == "9090"
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = int(settings["GRADSERVE_SHUTDOWN_GRACE"])
    assert pod["terminationGracePeriodSeconds"] > grace + pre_stop
    assert pod["enableServiceLinks"] is False  # GRADSERVE_METRICS_PORT=tcp://... otherwise

    # Writable directories are emptyDirs: /tmp, and the multiprocess metrics dir.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert mounts["/tmp"] in empty_dirs
    if "PROMETHEUS_MULTIPROC_DIR" in settings:
        assert mounts[settings["PROMETHEUS_MULTIPROC_DIR"]] in empty_dirs
        assert int(settings["GRADSERVE_WORKERS"]) > 1


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_services_hpa_pdb_networkpolicy(directory: Path) -> None:
    objs = objects(directory)
    pod_labels = one(objs, "Deployment", "gradserve")["spec"]["template"]["metadata"]["labels"]

    headless = one(objs, "Service", "gradserve-headless")["spec"]
    assert headless["clusterIP"] == "None"
    assert [p["port"] for p in headless["ports"]] == [50051]
    assert headless["selector"].items() <= pod_labels.items()

    metrics = one(objs, "Service", "gradserve-metrics")
    assert metrics["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert [(p["name"], p["port"]) for p in metrics["spec"]["ports"]] == [("metrics", 9090)]
    assert metrics["spec"]["selector"].items() <= pod_labels.items()

    hpa = one(objs, "HorizontalPodAutoscaler", "gradserve")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gradserve"
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]

    pdb = one(objs, "PodDisruptionBudget", "gradserve")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()

    policy = one(objs, "NetworkPolicy", "gradserve")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ports == {50051, 9090}
    egress_ports = {p["port"] for rule in policy.get("egress", []) for p in rule["ports"]}
    assert egress_ports <= {53}

    for servicemonitor in (o for o in objs if o["kind"] == "ServiceMonitor"):
        spec = servicemonitor["spec"]
        assert spec["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
        assert {e["port"] for e in spec["endpoints"]} <= {"metrics"}


def test_prod_overlay_is_bigger_and_monitored() -> None:
    dev, prod = objects(K8S / "overlays" / "dev"), objects(K8S / "overlays" / "prod")
    assert one(prod, "ServiceMonitor", "gradserve")
    assert not [o for o in dev if o["kind"] == "ServiceMonitor"]
    hpa_dev = one(dev, "HorizontalPodAutoscaler")["spec"]
    hpa_prod = one(prod, "HorizontalPodAutoscaler")["spec"]
    assert hpa_prod["minReplicas"] > hpa_dev["minReplicas"]
    assert hpa_prod["maxReplicas"] > hpa_dev["maxReplicas"]

    def cpu(objs: list[dict[str, Any]]) -> float:
        value = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        text = str(value["resources"]["requests"]["cpu"])
        return float(text[:-1]) / 1000 if text.endswith("m") else float(text)

    assert cpu(prod) > cpu(dev)


# --------------------------------------------------------------------------------
# Dockerfile


def test_hadolint_has_no_findings() -> None:
    result = run([tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert len(froms) >= 2, "multi-stage"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.M)
    assert 'ENTRYPOINT ["gradserve", "serve"]' in text
    assert 'CMD ["--host", "0.0.0.0"]' in text
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.M)[-1]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) > 0, "numeric non-root UID"
    assert re.search(r"^EXPOSE\s+50051\s+9090", text, flags=re.M)
    final_stage = text.split("FROM ")[-1]
    assert not re.search(r"apt-get install|build-essential|gcc", final_stage)
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "**" in dockerignore and "!service/" in dockerignore


# --------------------------------------------------------------------------------
# Prometheus


def test_promtool_check_config() -> None:
    result = run([tool("promtool"), "check", "config", str(PROM_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = run([tool("promtool"), "check", "rules", str(PROM_RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    """The alerts fire on what they should, and not on client errors."""
    args = [tool("promtool"), "test", "rules", PROM_RULES_TEST.name]
    result = run(args, cwd=PROM_RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_metrics_on_exposition() -> None:
    result = run([tool("promtool"), "check", "metrics"], input=exposition())
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stdout.strip() and not result.stderr.strip(), result.stdout + result.stderr


# --------------------------------------------------------------------------------
# Metric names in the dashboard and in the rules

_TOUCH_ALL = """
import sys
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase
import gradserve.metrics as m

for value in list(vars(m).values()):
    if isinstance(value, MetricWrapperBase) and value._labelnames:
        value.labels(*["x"] * len(value._labelnames))
sys.stdout.write(generate_latest(m.REGISTRY).decode())
"""


@cache
def exposition() -> str:
    """/metrics text of gradserve.metrics, with every labelled metric touched once.

    In a subprocess, so that the test process's environment (say a
    PROMETHEUS_MULTIPROC_DIR) and imports do not matter.
    """
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "service"), str(ROOT / "client"), env.get("PYTHONPATH", "")]
    )
    result = run([sys.executable, "-c", _TOUCH_ALL], env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def exposed_series() -> set[str]:
    names = set()
    for line in exposition().splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def family(series: str) -> str:
    return re.sub(r"_(bucket|sum|count|total|created)$", "", series)


METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])gradserve_[A-Za-z0-9_]+")


def check_names(exprs: list[str], where: str) -> set[str]:
    """Every gradserve_* name queried must be a series of the exposition.

    Exact series names, not families: a histogram is queried as _bucket/_sum/_count
    and a counter as _total, so a bare histogram name would match nothing.
    """
    series = exposed_series()
    families = {family(s) for s in series}
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert used, f"{where} queries no gradserve metric"
    for name in sorted(used):
        hint = " (family exists: wrong suffix?)" if family(name) in families else ""
        assert name in series, f"{where} queries {name}, not in /metrics{hint}"
    return {family(n) for n in used}


def dashboard_exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in dashboard_exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in dashboard_exprs(v)]
    return []


def test_dashboard_queries_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"] and dashboard["uid"] and dashboard["title"]
    exprs = dashboard_exprs(dashboard["panels"])
    variables = [v.get("definition", "") for v in dashboard["templating"]["list"]]
    families = check_names(exprs + variables, "dashboard")
    required = {
        "gradserve_requests",
        "gradserve_request_duration_seconds",
        "gradserve_inflight_requests",
        "gradserve_train_steps",
        "gradserve_train_active_streams",
        "gradserve_graph_cache_hits",
        "gradserve_graph_cache_misses",
    }
    assert required <= families, required - families
    quantiles = set(re.findall(r"histogram_quantile\((0\.\d+)", " ".join(exprs)))
    assert {"0.5", "0.9", "0.99"} <= quantiles


def test_rules_query_existing_metrics() -> None:
    rules = yaml.safe_load(PROM_RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    check_names(exprs, "alerts.yml")
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "GradserveHighErrorRatio",
        "GradserveHighLatencyP99",
        "GradserveSaturated",
        "GradserveTargetDown",
    } <= alerts
