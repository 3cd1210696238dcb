"""What deploy/k8s renders: every resource validates (the built-in kinds by
kubernetes-validate in strict mode, the custom resources against our schemas in
deploy/k8s/schemas/), and each overlay holds what it is for.
Without kubectl on the PATH the tests skip, saying so."""

from __future__ import annotations

from tests.deploy.kubernetes import (
    BOX,
    WORKER,
    Doc,
    find,
    of_kind,
    render,
    set_field,
    validation_errors,
)


def test_every_resource_validates(docs: list[Doc]) -> None:
    errors = [error for doc in docs for error in validation_errors(doc)]
    assert errors == []


def test_the_kubernetes_kinds_refuse_an_unknown_field(production: list[Doc]) -> None:
    assert validation_errors(find(production, "Deployment", "worker")) == []
    set_field(WORKER, f"{BOX}.livenessprobe", "1")(production)
    errors = validation_errors(find(production, "Deployment", "worker"))
    assert errors and "livenessprobe" in errors[0], errors


def test_production_scales_spreads_and_is_scraped(production: list[Doc]) -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]) for doc in production}
    assert {
        ("HorizontalPodAutoscaler", "api"),
        ("ScaledObject", "worker"),
        ("TriggerAuthentication", "redis"),
        ("ServiceMonitor", "model-serving"),
        ("PodDisruptionBudget", "api"),
        ("PodDisruptionBudget", "worker"),
        ("PodDisruptionBudget", "callback-worker"),
    } <= kinds
    namespace = find(production, "Namespace", "model-serving")["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"
    assert find(production, "ScaledObject", "worker")["spec"]["minReplicaCount"] >= 2
    assert find(production, "HorizontalPodAutoscaler", "api")["spec"]["minReplicas"] >= 2
    for name in ("api", "worker"):
        spread = find(production, "Deployment", name)["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in spread["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_dev_needs_no_operator_and_runs_one_pod_each() -> None:
    dev = list(render("dev"))
    assert {doc["apiVersion"].split("/")[0] for doc in dev} <= {"v1", "apps", "policy"}
    for deployment in of_kind(dev, "Deployment"):
        assert deployment["spec"].get("replicas", 1) == 1
