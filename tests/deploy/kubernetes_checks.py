"""The invariants the rendered manifests promise, each a function returning its problems,
so that a mutated copy of a render shows it can fail."""

from __future__ import annotations

from collections.abc import Callable

import yaml

from tests.deploy.kubernetes import (
    ROOT,
    Doc,
    component,
    container_of,
    containers,
    environment,
    find,
    of_kind,
    setting,
)
from tests.deploy.kubernetes_secrets import reference_problems, secret_problems

Check = Callable[[list[Doc]], list[str]]

PING = ["python", "-m", "worker.ping"]
WORKER_COMMAND = ["python", "-m", "worker"]
# What each component's probes must ask: an HTTP path on the port named http, or a command.
PROBES: dict[str, str | list[str]] = {
    "api": "/healthz",
    "flower": "/healthcheck",
    "worker": PING,
    "callback-worker": PING,
}
# The jobs of prometheus.yml (the compose stack's), which the alert rules and the Grafana
# dashboard query: a ServiceMonitor's job label is the Service's name.
SCRAPED_JOBS = {
    job["job_name"]
    for job in yaml.safe_load((ROOT / "prometheus.yml").read_text())["scrape_configs"]
} - {"prometheus"}


def is_worker(container: Doc) -> bool:
    command: list[str] = container.get("command", [])
    return command[:3] == WORKER_COMMAND


def grace_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for deployment, container in containers(docs):
        name, values = deployment["metadata"]["name"], environment(docs, container)
        grace = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
        if is_worker(container) and grace <= setting(values, "task_time_limit_seconds"):
            problems.append(f"{name}: grace period {grace} s <= the task hard time limit")
        if component(deployment) == "api":
            pause = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
            needed = setting(values, "predict_timeout_seconds") + pause.get("seconds", 0)
            if grace <= needed:
                problems.append(f"{name}: grace period {grace} s <= preStop + predict timeout")
    return problems


def probe_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for deployment, container in containers(docs):
        name, expected = deployment["metadata"]["name"], PROBES.get(component(deployment))
        timeout = setting(environment(docs, container), "readiness_timeout_seconds")
        for kind in ("livenessProbe", "readinessProbe"):
            probe = container.get(kind)
            if probe is None:
                problems.append(f"{name}: no {kind}")
            elif isinstance(expected, str):
                if probe.get("httpGet") != {"path": expected, "port": "http"}:
                    problems.append(f"{name}: {kind} is not GET {expected} on port http")
            elif probe.get("exec", {}).get("command") != expected:
                problems.append(f"{name}: {kind} does not run {expected}")
            elif probe.get("timeoutSeconds", 1) <= timeout:
                problems.append(f"{name}: {kind} times out before the ping's {timeout:g} s")
    return problems


def resource_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for deployment, container in containers(docs):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            missing = {"cpu", "memory"} - set(resources.get(bound, {}))
            if missing:
                name = deployment["metadata"]["name"]
                problems.append(f"{name}/{container['name']}: no {bound} for {sorted(missing)}")
    return problems


def autoscaling_problems(docs: list[Doc]) -> list[str]:
    problems = []
    scaled = {("HorizontalPodAutoscaler", "api"), ("ScaledObject", "worker")}
    for kind, expected in scaled:
        for scaler in of_kind(docs, kind):
            target = scaler["spec"]["scaleTargetRef"]
            if (target.get("kind", "Deployment"), target["name"]) != ("Deployment", expected):
                problems.append(f"{kind} {scaler['metadata']['name']} targets {target['name']}")
            elif "replicas" in find(docs, "Deployment", expected)["spec"]:
                problems.append(f"Deployment {expected} sets replicas its {kind} owns")
    for scaled_object in of_kind(docs, "ScaledObject"):
        problems += trigger_problems(docs, scaled_object)
    return problems


def trigger_problems(docs: list[Doc], scaled_object: Doc) -> list[str]:
    """The redis triggers watch the Redis database and the lists the workers consume."""
    values = environment(docs, container_of(docs, "worker"))
    broker = values.get("SERVING_BROKER_URL") or values["SERVING_REDIS_URL"]
    _, _, address, database = broker.split("/")[:4]
    queues = {"predictions": values["SERVING_TASK_QUEUE"], "jobs": values["SERVING_JOB_QUEUE"]}
    auths = {auth["metadata"]["name"] for auth in of_kind(docs, "TriggerAuthentication")}
    problems = []
    for trigger in scaled_object["spec"]["triggers"]:
        meta, name = trigger["metadata"], trigger.get("name", "")
        expected = {"address": address, "databaseIndex": database, "listName": queues.get(name)}
        wrong = {key: meta.get(key) for key, value in expected.items() if meta.get(key) != value}
        if wrong:
            problems.append(f"trigger {name}: {wrong} differ from the worker's {expected}")
        if trigger.get("authenticationRef", {}).get("name") not in auths:
            problems.append(f"trigger {name}: its TriggerAuthentication is not rendered")
    return problems


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def selector_problems(docs: list[Doc]) -> list[str]:
    problems = []
    pods = {
        d["metadata"]["name"]: (d["spec"]["template"]["metadata"]["labels"], d)
        for d in of_kind(docs, "Deployment")
    }
    for name, (labels, deployment) in pods.items():
        if not matches(deployment["spec"]["selector"]["matchLabels"], labels):
            problems.append(f"Deployment {name}: its selector misses its own pods")
    for doc in of_kind(docs, "Service") + of_kind(docs, "PodDisruptionBudget"):
        selector = doc["spec"]["selector"]
        selector = selector.get("matchLabels", {}) if doc["kind"] != "Service" else selector
        chosen = [d for labels, d in pods.values() if matches(selector, labels)]
        if len(chosen) != 1:
            problems.append(f"{doc['kind']} {doc['metadata']['name']} selects {len(chosen)} pods")
        elif doc["kind"] == "Service":
            problems += port_problems(doc, chosen[0])
    return problems + monitor_problems(docs)


def port_problems(service: Doc, deployment: Doc) -> list[str]:
    names = {
        port.get("name")
        for container in deployment["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }
    return [
        f"Service {service['metadata']['name']}: no container port named {port['targetPort']}"
        for port in service["spec"]["ports"]
        if port["targetPort"] not in names
    ]


def monitor_problems(docs: list[Doc]) -> list[str]:
    """The ServiceMonitors scrape (at least) the jobs the alert rules watch."""
    scraped = set()
    for monitor in of_kind(docs, "ServiceMonitor"):
        ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
        selector = monitor["spec"]["selector"]["matchLabels"]
        scraped |= {
            service["metadata"]["name"]
            for service in of_kind(docs, "Service")
            if matches(selector, service["metadata"]["labels"])
            and ports & {port["name"] for port in service["spec"]["ports"]}
        }
    if of_kind(docs, "ServiceMonitor") and not scraped >= SCRAPED_JOBS:
        return [f"the ServiceMonitors scrape {sorted(scraped)}, not all of {sorted(SCRAPED_JOBS)}"]
    return []


def security_problems(docs: list[Doc]) -> list[str]:
    problems = []
    for deployment, container in containers(docs):
        pod = deployment["spec"]["template"]["spec"]
        context, name = pod.get("securityContext", {}), deployment["metadata"]["name"]
        if not (context.get("runAsNonRoot") and context.get("runAsUser", 0) > 0):
            problems.append(f"{name}: not run as a non-root UID")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        if pod.get("automountServiceAccountToken", True):
            problems.append(f"{name}: mounts a service account token")
        own = container.get("securityContext", {})
        if own.get("allowPrivilegeEscalation", True) or not own.get("readOnlyRootFilesystem"):
            problems.append(f"{name}: may escalate privileges or write its root filesystem")
        if own.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{name}: keeps capabilities")
    return problems


def image_problems(docs: list[Doc]) -> list[str]:
    problems, ours = [], set()
    for _, container in containers(docs):
        name, _, tag = container["image"].rpartition(":")
        if not name or tag == "latest":
            problems.append(f"{container['name']}: image {container['image']} has no fixed tag")
        elif name.rpartition("/")[2].startswith("model-serving-"):
            ours.add(tag)
    if len(ours) > 1:
        problems.append(f"the API and worker images differ in release: {sorted(ours)}")
    return problems


CHECKS: dict[str, Check] = {
    "grace": grace_problems,
    "probes": probe_problems,
    "resources": resource_problems,
    "secrets": secret_problems,
    "references": reference_problems,
    "autoscaling": autoscaling_problems,
    "selectors": selector_problems,
    "security": security_problems,
    "images": image_problems,
}
