"""prometheus.yml and the alert rules: valid for promtool, unit tested, and naming only
metrics (and labels) that common/metrics.py defines.

promtool comes from dev.prometheus.find_prometheus (the PATH, else the project cache,
else Debian's package unpacked into that cache).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from common import metrics
from dev import prometheus as dev_prometheus
from dev.prometheus import find_prometheus

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"

# Labels every scraped series has, and the histogram bucket label.
TARGET_LABELS = {"job", "instance"}
METRIC_NAME = re.compile(r"\bserving_[A-Za-z0-9_]+")
SELECTOR = re.compile(r"\b(serving_[A-Za-z0-9_]+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
QUOTED = re.compile(r'"(?:\\.|[^"\\])*"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@pytest.fixture(scope="module")
def promtool() -> Path:
    return find_prometheus()[1]


def run_promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def exposed_metrics() -> dict[str, set[str]]:
    """Series names the services expose -> their label names (None: not known here)."""
    exposed: dict[str, set[str]] = {}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = set(obj._labelnames)
        name = obj._name  # a Counter's _name lacks the "_total" it is exposed with
        if isinstance(obj, Counter):
            exposed[f"{name}_total"] = labels
        elif isinstance(obj, Histogram):
            exposed[f"{name}_bucket"] = labels | {"le"}
            exposed[f"{name}_sum"] = labels
            exposed[f"{name}_count"] = labels
        elif isinstance(obj, Gauge):
            exposed[name] = labels
    # Collected by the API at scrape time, not declared as objects.
    exposed[metrics.QUEUE_DEPTH] = {"queue"}
    exposed[metrics.QUEUE_OLDEST_AGE] = {"queue"}
    return exposed


def test_config_is_valid(promtool: Path) -> None:
    done = run_promtool(promtool, "check", "config", "prometheus.yml")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SUCCESS: prometheus.yml is valid prometheus config file syntax" in output
    assert "SUCCESS: 1 rule files found" in output


def test_rules_are_valid(promtool: Path) -> None:
    done = run_promtool(promtool, "check", "rules", "deploy/prometheus/alerts.yml")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_unit_tests_pass(promtool: Path) -> None:
    done = run_promtool(promtool, "test", "rules", "deploy/prometheus/alerts_test.yml")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SUCCESS" in output


def test_every_alert_is_tested_firing_and_key_ones_also_quiet() -> None:
    """The unit tests keep their teeth: each alert fires in some case, and the main
    ones are also shown not to fire on healthy series."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in load(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set()
    assert {"WorkerOffline", "AllWorkersOffline", "HighErrorRatio"} <= quiet
    assert {"WorkerOffline", "HighErrorRatio", "QueueBacklogOld", "HighLatencyP99"} <= names
    assert {"TaskFailures"} <= names


def test_alerts_are_well_formed() -> None:
    for rule in alert_rules():
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]


def test_alerts_use_only_metrics_and_labels_the_services_expose() -> None:
    exposed = exposed_metrics()
    used: set[str] = set()
    for rule in alert_rules():
        expr = rule["expr"]
        names = set(METRIC_NAME.findall(expr))
        used |= names
        unknown = names - set(exposed)
        assert not unknown, f"{rule['alert']} uses metrics common/metrics.py lacks: {unknown}"
        for name, matchers in SELECTOR.findall(expr):
            labels = set(MATCHER_LABEL.findall(QUOTED.sub('""', matchers))) - TARGET_LABELS
            assert labels <= exposed[name], f"{rule['alert']}: {name} has no {labels}"
        available = set().union(*(exposed[n] for n in names)) | TARGET_LABELS
        for grouping in GROUPING.findall(expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            assert labels <= available, f"{rule['alert']} groups by unknown {labels}"
    assert {
        "serving_http_requests_total",
        "serving_http_request_duration_seconds_bucket",
        "serving_queue_oldest_task_age_seconds",
        "serving_task_failures_total",
    } <= used


def test_config_scrapes_every_service() -> None:
    config = load(CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    for rule_file in config["rule_files"]:
        assert (CONFIG.parent / rule_file).resolve() == RULES
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"api", "worker", "callback-worker", "flower", "prometheus"}
    assert jobs["api"]["static_configs"][0]["targets"] == ["api:8000"]
    # Every replica of the scaled worker service, from Docker's DNS.
    (dns,) = jobs["worker"]["dns_sd_configs"]
    assert (dns["names"], dns["type"], dns["port"]) == (["worker"], "A", 9808)
    (dns,) = jobs["callback-worker"]["dns_sd_configs"]
    assert (dns["names"], dns["type"], dns["port"]) == (["callback-worker"], "A", 9808)
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]
    # The alerts' job selectors match the job names.
    exprs = " ".join(rule["expr"] for rule in alert_rules())
    assert set(re.findall(r'job="([^"]+)"', exprs)) <= set(jobs)


def test_find_prometheus_without_root_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing on the PATH, an empty cache, no root: a clear error, and no apt-get run."""
    monkeypatch.setattr(dev_prometheus.shutil, "which", lambda _name: None)
    monkeypatch.setattr(dev_prometheus.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(dev_prometheus, "_run", pytest.fail)
    with pytest.raises(RuntimeError, match="needs root"):
        find_prometheus(tmp_path / "cache")
