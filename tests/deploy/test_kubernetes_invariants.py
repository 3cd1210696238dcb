"""The invariants the rendered manifests promise hold in both overlays, and each check can
fail: a mutated copy of the production render shows it. Without kubectl they skip."""

from __future__ import annotations

import pytest

from tests.deploy.kubernetes import (
    API,
    BOX,
    POD,
    WORKER,
    Doc,
    of_kind,
    set_field,
)
from tests.deploy.kubernetes_checks import CHECKS, grace_problems
from tests.deploy.kubernetes_secrets import EXTERNAL_SECRET, secret_problems


@pytest.mark.parametrize("name", CHECKS)
def test_invariant_holds(docs: list[Doc], name: str) -> None:
    assert CHECKS[name](docs) == []


PLAIN = {"name": "SERVING_REDIS_PASSWORD", "value": "a-plain-password"}
URL = {"name": "SERVING_DATABASE_URL", "value": "postgresql+psycopg://u:pw@db/serving"}
SELECTOR = {"app.kubernetes.io/name": "model-serving", "app.kubernetes.io/component": "apx"}
MUTATIONS = {
    "short grace": (set_field(WORKER, f"{POD}.terminationGracePeriodSeconds", 60), "grace", "hard"),
    "api grace": (set_field(API, f"{POD}.terminationGracePeriodSeconds", 30), "grace", "preStop"),
    "no readiness": (set_field(API, f"{BOX}.readinessProbe", None), "probes", "no readiness"),
    "ready needs a key": (
        set_field(API, f"{BOX}.livenessProbe.httpGet.path", "/ready"),
        "probes",
        "not GET /healthz",
    ),
    "no ping": (set_field(WORKER, f"{BOX}.livenessProbe.exec.command", ["true"]), "probes", "ping"),
    "ping cut short": (
        set_field(WORKER, f"{BOX}.readinessProbe.timeoutSeconds", 5),
        "probes",
        "times out",
    ),
    "no limits": (
        set_field("Deployment/flower", f"{BOX}.resources", {"requests": {"cpu": "1"}}),
        "resources",
        "no limits",
    ),
    "plain password": (set_field(API, f"{BOX}.env.0", PLAIN), "secrets", "not from a Secret"),
    "url with password": (set_field(API, f"{BOX}.env.1", URL), "secrets", "a secret in 'value'"),
    "secret in trigger": (
        set_field("ScaledObject/worker", "spec.triggers.0.metadata.password", "hunter2"),
        "secrets",
        "a secret in 'password'",
    ),
    "other secret": (
        set_field(API, f"{BOX}.env.0.valueFrom.secretKeyRef.name", "mine"),
        "references",
        "neither rendered",
    ),
    "undocumented key": (
        set_field(API, f"{BOX}.env.0.valueFrom.secretKeyRef.key", "SERVING_X"),
        "references",
        "SERVING_X is not in",
    ),
    "optional made required": (
        set_field(API, f"{BOX}.env.2.valueFrom.secretKeyRef.optional", False),
        "references",
        "SERVING_S3_ACCESS_KEY_ID is optional",
    ),
    "missing configmap": (
        set_field(API, f"{BOX}.envFrom.0.configMapRef.name", "gone"),
        "references",
        "ConfigMap gone",
    ),
    "hpa on worker": (
        set_field("HorizontalPodAutoscaler/api", "spec.scaleTargetRef.name", "worker"),
        "autoscaling",
        "targets worker",
    ),
    "fixed replicas": (set_field(WORKER, "spec.replicas", 3), "autoscaling", "sets replicas"),
    "other redis": (
        set_field("ScaledObject/worker", "spec.triggers.0.metadata.address", "redis:6380"),
        "autoscaling",
        "address",
    ),
    "other queue": (
        set_field("ScaledObject/worker", "spec.triggers.1.metadata.listName", "jobs"),
        "autoscaling",
        "listName",
    ),
    "wrong selector": (
        set_field("Service/api", "spec.selector", SELECTOR),
        "selectors",
        "selects 0",
    ),
    "wrong port": (
        set_field("Service/worker", "spec.ports.0.targetPort", "http"),
        "selectors",
        "no container port",
    ),
    "unscraped workers": (
        set_field("ServiceMonitor/model-serving", "spec.endpoints.1.port", "prom"),
        "selectors",
        "not all",
    ),
    "whole secret": (
        set_field(WORKER, f"{BOX}.envFrom", [{"secretRef": {"name": EXTERNAL_SECRET}}]),
        "references",
        "name the keys",
    ),
    "root": (set_field(WORKER, f"{POD}.securityContext.runAsUser", 0), "security", "non-root"),
    "writable root": (
        set_field(WORKER, f"{BOX}.securityContext.readOnlyRootFilesystem", False),
        "security",
        "root filesystem",
    ),
    "latest": (set_field(API, f"{BOX}.image", "model-serving-api:latest"), "images", "no fixed"),
    "mixed releases": (
        set_field(WORKER, f"{BOX}.image", "model-serving-worker:0.9"),
        "images",
        "differ",
    ),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_invariant_can_fail(production: list[Doc], mutation: str) -> None:
    mutate, check, expected = MUTATIONS[mutation]
    assert CHECKS[check](production) == []
    mutate(production)
    problems = CHECKS[check](production)
    assert any(expected in problem for problem in problems), problems


def test_grace_follows_the_configured_time_limit(production: list[Doc]) -> None:
    (configmap,) = of_kind(production, "ConfigMap")
    configmap["data"]["SERVING_TASK_TIME_LIMIT_SECONDS"] = "90"
    assert {p.split(":")[0] for p in grace_problems(production)} == {"worker", "callback-worker"}


def test_secret_leaks_into_a_configmap_are_found(production: list[Doc]) -> None:
    (configmap,) = of_kind(production, "ConfigMap")
    configmap["data"]["SERVING_CALLBACK_SECRET"] = "a-callback-secret-of-some-length"
    production.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}})
    problems = secret_problems(production)
    assert any("holds ['SERVING_CALLBACK_SECRET']" in p for p in problems), problems
    assert "Secret s is in the manifests" in problems
