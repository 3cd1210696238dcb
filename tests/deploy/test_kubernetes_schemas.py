"""Our schemas of the custom resources (deploy/k8s/schemas/) are strict: they refuse a
broken ScaledObject, TriggerAuthentication or ServiceMonitor, yet take the fields the
documentation gives that the manifests do not use yet."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest

from tests.deploy.kubernetes import (
    CRD_SCHEMAS,
    Doc,
    crd_schema,
    crd_validator,
    drop_field,
    find,
    loose_objects,
    set_field,
    validation_errors,
)


@pytest.mark.parametrize("file_name", sorted(set(CRD_SCHEMAS.values())))
def test_our_schemas_are_strict_2020_12(file_name: str) -> None:
    schema = crd_schema(file_name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert isinstance(crd_validator(file_name), jsonschema.Draft202012Validator)
    assert list(loose_objects(schema)) == []


def test_a_loose_schema_object_is_found() -> None:
    schema = copy.deepcopy(crd_schema("keda-scaledobject.schema.json"))
    del schema["$defs"]["fallback"]["additionalProperties"]
    schema["$defs"]["trigger"]["additionalProperties"] = True
    assert list(loose_objects(schema)) == ["$.$defs.fallback", "$.$defs.trigger"]


def json_path(path: str) -> str:
    """`spec.triggers.0.metadata` as jsonschema names it: `$.spec.triggers[0].metadata`."""
    return "$" + "".join(f"[{k}]" if k.isdigit() else f".{k}" for k in path.split("."))


SO, TA, SM = "ScaledObject/worker", "TriggerAuthentication/redis", "ServiceMonitor/model-serving"
TRIGGER, ENDPOINT, SECRET_REF = "spec.triggers.0", "spec.endpoints.0", "spec.secretTargetRef.0"
DROP = object()  # as a value: remove the field
# resource, field, its new value, then where the error is and what it says: each breaks
# one rule of our schemas (an unknown field, a wrong type, a missing field, a bad value).
SCHEMA_MUTATIONS: dict[str, tuple[str, str, Any, str, str]] = {
    "unknown in ScaledObject": (SO, "spec.minReplicas", 1, "spec", "'minReplicas' was unexpected"),
    "unknown in a trigger": (SO, f"{TRIGGER}.authModes", "tls", TRIGGER, "'authModes' was"),
    "unknown in TriggerAuthentication": (
        TA,
        f"{SECRET_REF}.secret",
        "s",
        SECRET_REF,
        "'secret' was",
    ),
    "unknown in ServiceMonitor": (
        SM,
        f"{ENDPOINT}.scrape_interval",
        "15s",
        ENDPOINT,
        "'scrape_interval' was unexpected",
    ),
    "unknown in metadata": (SM, "metadata.label", {"a": "b"}, "metadata", "'label' was unexpected"),
    "replicas as a string": (
        SO,
        "spec.minReplicaCount",
        "2",
        "spec.minReplicaCount",
        "'2' is not of type 'integer'",
    ),
    "trigger parameter as a number": (
        SO,
        f"{TRIGGER}.metadata.listLength",
        5,
        f"{TRIGGER}.metadata.listLength",
        "5 is not of type 'string'",
    ),
    "secret key as a number": (
        TA,
        f"{SECRET_REF}.key",
        5,
        f"{SECRET_REF}.key",
        "5 is not of type 'string'",
    ),
    "honorLabels as a string": (
        SM,
        f"{ENDPOINT}.honorLabels",
        "true",
        f"{ENDPOINT}.honorLabels",
        "'true' is not of type 'boolean'",
    ),
    "no target name": (
        SO,
        "spec.scaleTargetRef.name",
        DROP,
        "spec.scaleTargetRef",
        "'name' is a required property",
    ),
    "no triggers": (SO, "spec.triggers", DROP, "spec", "'triggers' is a required property"),
    "redis trigger without a list": (
        SO,
        f"{TRIGGER}.metadata.listName",
        DROP,
        f"{TRIGGER}.metadata",
        "'listName' is a required property",
    ),
    "secret ref without a parameter": (
        TA,
        f"{SECRET_REF}.parameter",
        DROP,
        SECRET_REF,
        "'parameter' is a required property",
    ),
    "no selector": (SM, "spec.selector", DROP, "spec", "'selector' is a required property"),
    "unknown trigger type": (
        SO,
        f"{TRIGGER}.type",
        "redis-list",
        f"{TRIGGER}.type",
        "'redis-list' is not one of",
    ),
    "Utilization for a queue": (
        SO,
        f"{TRIGGER}.metricType",
        "Utilization",
        f"{TRIGGER}.metricType",
        "'Utilization' is not one of",
    ),
    "misspelt auth kind": (
        SO,
        f"{TRIGGER}.authenticationRef.kind",
        "ClusterTriggerAuth",
        f"{TRIGGER}.authenticationRef.kind",
        "'ClusterTriggerAuth' is not one of",
    ),
    "scheme ftp": (SM, f"{ENDPOINT}.scheme", "ftp", f"{ENDPOINT}.scheme", "'ftp' is not one of"),
    "interval in words": (
        SM,
        f"{ENDPOINT}.interval",
        "15 seconds",
        f"{ENDPOINT}.interval",
        "'15 seconds' does not match",
    ),
}


@pytest.mark.parametrize("mutation", SCHEMA_MUTATIONS)
def test_validation_refuses_a_broken_custom_resource(production: list[Doc], mutation: str) -> None:
    target, path, value, where, expected = SCHEMA_MUTATIONS[mutation]
    kind, name = target.split("/")
    assert validation_errors(find(production, kind, name)) == []
    (drop_field(target, path) if value is DROP else set_field(target, path, value))(production)
    errors = validation_errors(find(production, kind, name))
    prefix = f"{target}: {json_path(where)}: "
    assert any(e.startswith(prefix) and expected in e for e in errors), errors


# Fields the manifests do not use yet but the documentation gives: the schemas take them
# (strict is not the same as narrower than the API).
DOCUMENTED_FIELDS: dict[str, tuple[str, str, Any]] = {
    "fallback": (SO, "spec.fallback", {"failureThreshold": 3, "replicas": 6, "behavior": "static"}),
    "scaling modifiers": (
        SO,
        "spec.advanced.scalingModifiers",
        {"target": "2", "metricType": "AverageValue", "formula": "predictions + jobs"},
    ),
    "restore replicas": (SO, "spec.advanced.restoreToOriginalReplicaCount", True),
    "cpu trigger": (
        SO,
        "spec.triggers.1",
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}},
    ),
    "cluster auth": (
        SO,
        f"{TRIGGER}.authenticationRef",
        {"name": "redis", "kind": "ClusterTriggerAuthentication"},
    ),
    "cached metrics": (SO, f"{TRIGGER}.useCachedMetrics", True),
    "auth from env": (TA, "spec.env", [{"parameter": "host", "name": "REDIS_HOST"}]),
    "pod identity": (TA, "spec.podIdentity", {"provider": "aws", "identityOwner": "workload"}),
    "tls scrape": (
        SM,
        f"{ENDPOINT}.tlsConfig",
        {"ca": {"secret": {"name": "ca", "key": "ca.crt"}}, "minVersion": "TLS12"},
    ),
    "relabeling": (
        SM,
        f"{ENDPOINT}.metricRelabelings",
        [{"sourceLabels": ["__name__"], "regex": "go_.*", "action": "drop"}],
    ),
    "numbered port": (SM, f"{ENDPOINT}.targetPort", 8000),
    "namespaces": (SM, "spec.namespaceSelector", {"matchNames": ["model-serving"]}),
    "job label": (SM, "spec.jobLabel", "app.kubernetes.io/component"),
}


@pytest.mark.parametrize("field", DOCUMENTED_FIELDS)
def test_validation_takes_a_documented_field(production: list[Doc], field: str) -> None:
    target, path, value = DOCUMENTED_FIELDS[field]
    set_field(target, path, value)(production)
    assert validation_errors(find(production, *target.split("/"))) == []
