"""The secret invariants of the rendered manifests: no secret value in them, and every
Secret, ConfigMap and ServiceAccount a pod names is rendered or documented."""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Iterator
from typing import get_args

from pydantic import SecretStr

from common.settings import Settings
from tests.deploy.kubernetes import K8S, Doc, containers, of_kind, strings

# Made by the operator (deploy/k8s/secrets.env.example), never by the manifests.
EXTERNAL_SECRET = "serving-secrets"
SECRETS_EXAMPLE = K8S / "secrets.env.example"
# A password in a URL, unless it is a variable the container fills in ($VAR, ${VAR}).
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]*:(?!\$)[^/\s@]+@")
SECRET_FIELD = re.compile(r"(password|secret|token|api_?key)$", re.IGNORECASE)
COMMENTED_KEY = re.compile(r"^#\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)


def _secret_env() -> set[str]:
    secret_fields = {
        name
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr or SecretStr in get_args(field.annotation)
    }
    # Plain keys and their digests, and a database URL, which carries its password.
    secret_fields |= {"api_keys", "admin_api_keys", "api_key_sha256", "admin_api_key_sha256"}
    secret_fields.add("database_url")
    return {f"SERVING_{name.upper()}" for name in secret_fields} | {
        "REDIS_PASSWORD",  # Flower's
        "FLOWER_BASIC_AUTH",
        "CELERY_BROKER_URL",
    }


SECRET_ENV = _secret_env()


def secret_problems(docs: list[Doc]) -> list[str]:
    problems = [
        f"Secret {s['metadata']['name']} is in the manifests" for s in of_kind(docs, "Secret")
    ]
    for deployment, container in containers(docs):
        for entry in container.get("env", []):
            if entry["name"] in SECRET_ENV and "secretKeyRef" not in entry.get("valueFrom", {}):
                problems.append(
                    f"{deployment['metadata']['name']}: {entry['name']} not from a Secret"
                )
    for configmap in of_kind(docs, "ConfigMap"):
        leaked = SECRET_ENV & set(configmap.get("data", {}))
        if leaked:
            problems.append(f"ConfigMap {configmap['metadata']['name']} holds {sorted(leaked)}")
    for doc in docs:
        for key, value in strings(doc):
            if CREDENTIALS_IN_URL.search(value) or (SECRET_FIELD.search(key) and value):
                problems.append(f"{doc['kind']}/{doc['metadata']['name']}: a secret in {key!r}")
    return problems


@functools.cache
def documented_secret_keys() -> dict[str, bool]:
    """The external Secret's keys (secrets.env.example), each with whether it is optional
    (commented out). The required ones are read as kubectl itself reads the file."""
    command = ["kubectl", "create", "secret", "generic", EXTERNAL_SECRET, "--dry-run=client"]
    command += [f"--from-env-file={SECRETS_EXAMPLE}", "--output=json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    required = dict.fromkeys(json.loads(done.stdout)["data"], False)
    return dict.fromkeys(COMMENTED_KEY.findall(SECRETS_EXAMPLE.read_text()), True) | required


def secret_refs(docs: list[Doc]) -> Iterator[tuple[str, str, str | None, bool]]:
    """(who, Secret, key or None for the whole Secret, optional) of every reference."""
    for deployment, container in containers(docs):
        who = f"{deployment['metadata']['name']}/{container['name']}"
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                yield who, source["secretRef"]["name"], None, False
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield who, ref["name"], ref["key"], ref.get("optional", False)
        for volume in deployment["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                yield who, volume["secret"]["secretName"], None, False
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            yield (
                f"TriggerAuthentication/{auth['metadata']['name']}",
                ref["name"],
                ref["key"],
                False,
            )


def configmap_refs(container: Doc) -> Iterator[tuple[str, str | None]]:
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            yield source["configMapRef"]["name"], None
    for entry in container.get("env", []):
        ref = entry.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            yield ref["name"], ref["key"]


def reference_problems(docs: list[Doc]) -> list[str]:
    """Every ConfigMap, ServiceAccount and Secret a pod names is rendered, or is the
    external Secret, whose keys secrets.env.example documents, optional alike."""
    configmaps = {cm["metadata"]["name"]: cm.get("data", {}) for cm in of_kind(docs, "ConfigMap")}
    accounts = {sa["metadata"]["name"] for sa in of_kind(docs, "ServiceAccount")}
    problems = []
    for deployment, container in containers(docs):
        name = deployment["metadata"]["name"]
        for configmap, key in configmap_refs(container):
            if configmap not in configmaps or (key and key not in configmaps[configmap]):
                problems.append(f"{name}: ConfigMap {configmap} {key or ''} is not rendered")
        account = deployment["spec"]["template"]["spec"].get("serviceAccountName", "default")
        if account not in accounts:
            problems.append(f"{name}: ServiceAccount {account} is not rendered")
    return problems + external_secret_problems(docs)


def external_secret_problems(docs: list[Doc]) -> list[str]:
    documented = documented_secret_keys()
    rendered = {secret["metadata"]["name"] for secret in of_kind(docs, "Secret")}
    problems, used = [], set()
    for who, secret, key, optional in secret_refs(docs):
        if secret != EXTERNAL_SECRET:
            if secret not in rendered:
                problems.append(f"{who}: Secret {secret} is neither rendered nor documented")
        elif key is None:
            problems.append(f"{who}: takes all of {secret}; name the keys it needs")
        elif key not in documented:
            problems.append(f"{who}: {key} is not in {SECRETS_EXAMPLE.name}")
        elif documented[key] != optional:
            said = "optional" if documented[key] else "required"
            problems.append(f"{who}: {key} is {said} in {SECRETS_EXAMPLE.name}, not here")
        used.add(key)
    if set(documented) - used:
        problems.append(f"{SECRETS_EXAMPLE.name} has keys nothing reads: {set(documented) - used}")
    return problems
