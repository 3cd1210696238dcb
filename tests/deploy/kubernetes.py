"""Rendering deploy/k8s with `kubectl kustomize`, walking the render, and validating it.

The built-in kinds are validated by kubernetes-validate in strict mode, the custom
resources (KEDA, Prometheus Operator) against our own strict schemas in
deploy/k8s/schemas/ (SOURCES.md says what they cover). Without kubectl on the PATH,
`render` skips the test, saying so.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from common.settings import Settings

Doc = dict[str, Any]
Mutation = Callable[[list[Doc]], None]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
# The release of the kubectl that renders them here, and the newest kubernetes-validate
# 1.37.0 knows (an API removed since would show). They need 1.30 or newer: preStop `sleep`.
KUBERNETES_VERSIONS = ("1.32", "1.37")
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject.schema.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication.schema.json",
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
    ): "prometheus-operator-servicemonitor.schema.json",
}

# Where the mutations aim: `Kind/name`, and paths inside a Deployment.
API, WORKER = "Deployment/api", "Deployment/worker"
POD = "spec.template.spec"
BOX = f"{POD}.containers.0"  # the first (only) container


# --- rendering and walking ---------------------------------------------------------


@functools.cache
def render(overlay: str) -> tuple[Doc, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl is not on the PATH, so deploy/k8s is not rendered: install kubectl "
            "(1.27 or newer; `kubectl kustomize` renders offline) to check the manifests"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] == kind]


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    (doc,) = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    return doc


def component(doc: Doc) -> str:
    return str(doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", ""))


def containers(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    """(Deployment, container) for every container of every Deployment."""
    for deployment in of_kind(docs, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


def container_of(docs: list[Doc], name: str) -> Doc:
    container: Doc = find(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return container


def strings(node: Any) -> Iterator[tuple[str, str]]:
    """(key, value) for every string in a document, the key being the nearest name."""
    stack: list[tuple[str, Any]] = [("", node)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((str(k), v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((key, item) for item in value)
        elif isinstance(value, str):
            yield key, value


def environment(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The values a container's settings read: its ConfigMaps, then its literal env."""
    configmaps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in of_kind(docs, "ConfigMap")}
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            values.update(configmaps.get(source["configMapRef"]["name"], {}))
    values.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return values


def setting(values: dict[str, str], name: str) -> float:
    default = Settings.model_fields[name].default
    return float(values.get(f"SERVING_{name.upper()}", default))


# --- validation ------------------------------------------------------------------------


@functools.cache
def crd_schema(file_name: str) -> Any:
    return json.loads((K8S / "schemas" / file_name).read_text())


@functools.cache
def crd_validator(file_name: str) -> jsonschema.protocols.Validator:
    schema = crd_schema(file_name)
    validator = jsonschema.validators.validator_for(schema)
    validator.check_schema(schema)
    return validator(schema)


def loose_objects(node: Any, path: str = "$") -> Iterator[str]:
    """Where a schema lists an object's fields but would take others too. Conditions
    (if/then/else/not) only constrain an object defined beside them, so are left out."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from loose_objects(item, f"{path}[{index}]")
    elif isinstance(node, dict):
        if "properties" in node and node.get("additionalProperties") is not False:
            yield path
        for key, value in node.items():
            if key not in ("properties", "$defs", "if", "then", "else", "not"):
                yield from loose_objects(value, f"{path}.{key}")
        for group in ("properties", "$defs"):
            for key, value in node.get(group, {}).items():
                yield from loose_objects(value, f"{path}.{group}.{key}")


def validation_errors(doc: Doc) -> list[str]:
    name = f"{doc['kind']}/{doc['metadata']['name']}"
    crd = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        return [f"{name}: {e.json_path}: {e.message}" for e in crd_validator(crd).iter_errors(doc)]
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name} ({version}): {exc.json_path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name} ({version}): {exc.message}")
    return errors


# --- mutations -------------------------------------------------------------------------


def _parent(docs: list[Doc], target: str, path: str) -> tuple[Any, str | int]:
    node: Any = find(docs, *target.split("/"))
    *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
    for key in parents:
        node = node[key]
    return node, last


def set_field(target: str, path: str, value: Any) -> Mutation:
    """A mutation: in the resource `Kind/name`, the field at `a.b.0.c` set to value."""

    def mutate(docs: list[Doc]) -> None:
        node, last = _parent(docs, target, path)
        node[last] = value

    return mutate


def drop_field(target: str, path: str) -> Mutation:
    """A mutation: in the resource `Kind/name`, the field at `a.b.0.c` removed."""

    def mutate(docs: list[Doc]) -> None:
        node, last = _parent(docs, target, path)
        del node[last]

    return mutate
