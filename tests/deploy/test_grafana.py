"""Grafana provisioning and the dashboard: consistent with each other, with the compose
file's mounts, and querying only metrics (and labels) that common/metrics.py defines.

Every panel query is also parsed by promtool (from dev.prometheus.find_prometheus: the
PATH, else the project cache, else Debian's package unpacked into that cache).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter
from prometheus_client.metrics import MetricWrapperBase

from common import metrics
from dev.prometheus import find_prometheus

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"
DASHBOARD = GRAFANA / "dashboards" / "serving.json"

METRIC = re.compile(r"serving_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")
SELECTOR = re.compile(r"\b(serving_[a-z_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
TARGET_LABELS = {"job", "instance"}
# Grafana's variables, replaced by values PromQL accepts before promtool parses a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$model_type": ".*", "$version": ".*"}


def defined_metrics() -> dict[str, set[str]]:
    """Metric names the services expose, as queries name them -> their label names."""
    defined: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            # prometheus-client keeps a Counter's name without the "_total" it exposes.
            name = f"{obj._name}_total" if isinstance(obj, Counter) else obj._name
            defined[name] = set(obj._labelnames)
    # Collected by the API when /metrics is scraped: string constants, not objects.
    for obj in vars(metrics).values():
        if isinstance(obj, str) and obj.startswith("serving_"):
            defined[obj] = {"queue"}
    return defined


def base_name(name: str) -> str:
    """A histogram's series name without its _bucket/_count/_sum suffix."""
    return next((name[: -len(suffix)] for suffix in SUFFIXES if name.endswith(suffix)), name)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def graph_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found += [panel, *panel.get("panels", [])]  # collapsed rows nest their panels
    return [panel for panel in found if panel["type"] != "row"]


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [target["expr"] for panel in graph_panels(dashboard) for target in panel["targets"]]
    exprs += [variable["query"] for variable in dashboard["templating"]["list"]]
    return exprs


def provisioned_datasource() -> dict[str, Any]:
    (datasource,) = load_yaml(DATASOURCES)["datasources"]
    assert isinstance(datasource, dict)
    return datasource


def test_datasource_is_the_compose_prometheus() -> None:
    config = load_yaml(DATASOURCES)
    assert config["apiVersion"] == 1
    datasource = provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["uid"] == "serving-prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    assert datasource["access"] == "proxy"
    assert datasource["isDefault"] is True
    # The scrape interval, so that $__rate_interval spans enough samples.
    prometheus = load_yaml(ROOT / "prometheus.yml")
    assert datasource["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_dashboard_provider_reads_the_mounted_folder() -> None:
    (provider,) = load_yaml(PROVIDERS)["providers"]
    assert provider["type"] == "file"
    compose = load_yaml(ROOT / "docker-compose.yml")
    mounts = dict(volume.split(":")[:2] for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning/datasources"] == (
        "/etc/grafana/provisioning/datasources"
    )
    assert mounts["./deploy/grafana/provisioning/dashboards"] == (
        "/etc/grafana/provisioning/dashboards"
    )
    grafana_env = compose["services"]["grafana"]["environment"]
    home = grafana_env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


def test_dashboard_is_well_formed(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "serving-overview"
    assert dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in graph_panels(dashboard):
        assert panel["type"] in {"timeseries", "stat"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_panels_tile_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_query_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    uid = provisioned_datasource()["uid"]
    for panel in graph_panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid, variable["name"]


def test_queries_use_only_defined_metrics(dashboard: dict[str, Any]) -> None:
    defined = defined_metrics()
    used = set()
    for expr in queries(dashboard):
        for name in METRIC.findall(expr):
            base = base_name(name)
            assert base in defined, f"{name} is not defined in common/metrics.py: {expr}"
            used.add(base)
    # The panels the dashboard is for.
    assert {
        "serving_http_requests_total",
        "serving_http_request_duration_seconds",
        "serving_cache_lookups_total",
        "serving_queue_depth",
        "serving_queue_oldest_task_age_seconds",
        "serving_inference_duration_seconds",
        "serving_task_queue_wait_seconds",
        "serving_model_loads_total",
    } <= used


def test_queries_use_only_labels_the_metrics_have(dashboard: dict[str, Any]) -> None:
    defined = defined_metrics()
    for expr in queries(dashboard):
        names = {base_name(name) for name in METRIC.findall(expr)}
        for name, matchers in SELECTOR.findall(expr):
            base = base_name(name)
            labels = set(MATCHER_LABEL.findall(matchers)) - TARGET_LABELS
            assert labels <= defined[base], f"{name} has no label {labels - defined[base]}"
        available = set().union(*(defined[n] for n in names)) | TARGET_LABELS | {"le"}
        for grouping in GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            assert labels <= available, f"grouping by unknown {labels - available}: {expr}"


def test_latency_and_worker_panels(dashboard: dict[str, Any]) -> None:
    exprs = queries(dashboard)
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            expr.startswith(f"histogram_quantile({quantile},")
            and "serving_http_request_duration_seconds_bucket" in expr
            for expr in exprs
        ), quantile
    assert 'count(up{job="worker"} == 1) or vector(0)' in exprs
    inference = [expr for expr in exprs if "serving_inference_duration_seconds_bucket" in expr]
    assert inference and all("by (le, model_type, version)" in expr for expr in inference)
    titles = {panel["title"] for panel in graph_panels(dashboard)}
    assert {"Workers online", "Cache hit ratio", "Model loads", "Task queue wait"} <= titles


def test_model_variables_filter_the_model_panels(dashboard: dict[str, Any]) -> None:
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert set(variables) == {"model_type", "version"}
    for variable in variables.values():
        assert variable["type"] == "query"
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
        assert variable["query"].startswith("label_values(serving_")
    assert "$model_type" in variables["version"]["query"]
    # Every panel on per-model metrics follows the two variables.
    per_model = [
        target["expr"]
        for panel in graph_panels(dashboard)
        for target in panel["targets"]
        if re.search(r"serving_(inference|task|cache|model_load|prediction)", target["expr"])
    ]
    assert len(per_model) >= 10
    for expr in per_model:
        assert 'model_type=~"$model_type"' in expr and 'version=~"$version"' in expr, expr


def test_every_query_parses_as_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    rules = []
    for i, expr in enumerate(queries(dashboard)):
        if expr.startswith("label_values("):
            expr = expr[len("label_values(") : expr.rindex(",")]  # its series selector
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool = find_prometheus()[1]
    done = subprocess.run(
        [str(promtool), "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout + done.stderr
