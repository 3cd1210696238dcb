"""Seldon MLServer as a peer of the benchmark: the same XGBoost model behind MLServer's
V2 REST endpoint, `POST /v2/models/<name>/infer`, with adaptive batching.

`write_repository` lays out a model repository from the artifact the bare app serves
(the registry's active model, an XGBoost UBJSON or JSON file, copied as it is):
`settings.json` for the server, `<name>/model-settings.json` and the model file.
`start_mlserver` runs `mlserver start` on it from MLServer's own venv
(bench/mlserver_env.py). Its settings differ from MLServer's defaults only where the
benchmark needs them to: loopback and free ports, no access log (`debug: false`, as the
bare app has none), its scratch directories in the run's temporary directory, and one
model thread (OMP_NUM_THREADS=1, the thread budget of the bare app and the workers).
MLServer's own defaults are kept otherwise: one inference worker process, gzip, and
the metrics server (its Prometheus counters give the mean batch).
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import BodyTemplate, Target
from bench.procs import ProcessGroup
from common.registry import Registry
from common.store import LocalStore
from dev.services import ManagedProcess, free_port

MODEL_NAME = "demo-xgboost"
MAX_BATCH_SIZE = 64  # requests, of one row each here
MAX_BATCH_TIME_S = 0.005
DEFAULT_WORKERS = 1  # MLServer's own default parallel_workers
TENSOR = "input-0"
OUTPUT = "predict_proba"  # the bare app computes probabilities too, once per request
INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
READY_PATH = "/v2/health/ready"
# Artifact format -> (MLServer runtime, the file name it looks for).
RUNTIMES = {
    "xgboost-ubj": ("mlserver_xgboost.XGBoostModel", "model.ubj"),
    "xgboost-json": ("mlserver_xgboost.XGBoostModel", "model.json"),
}
# In its Prometheus metrics: the infer route's answers, and the messages (batches) its
# HTTP process sent to the inference workers (none with parallel_workers 0).
REQUESTS_METRIC = "rest_server_requests_total"
BATCHES_METRIC = "parallel_request_queue_count"
# The caller's variables that would reconfigure MLServer or point it at another venv.
FOREIGN_ENV_PREFIXES = ("SERVING_", "MLSERVER_", "PYTHONPATH", "VIRTUAL_ENV")


@dataclass(frozen=True)
class Launched:
    proc: ManagedProcess
    target: Target
    metrics_url: str


@dataclass(frozen=True)
class Ports:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> Ports:
        return cls(free_port(), free_port(), free_port())


def server_settings(ports: Ports, work_dir: Path, workers: int) -> dict[str, Any]:
    """settings.json: the server's, not the model's."""
    return {
        "debug": False,
        "host": "127.0.0.1",
        "http_port": ports.http,
        "grpc_port": ports.grpc,
        "metrics_port": ports.metrics,
        "parallel_workers": workers,
        "metrics_dir": str(work_dir / "metrics"),
        "environments_dir": str(work_dir / "envs"),
    }


def model_settings(artifact_format: str, version: str) -> dict[str, Any]:
    """<name>/model-settings.json: the runtime, adaptive batching and the model file."""
    if artifact_format not in RUNTIMES:
        raise ValueError(
            f"the MLServer peer serves XGBoost artifacts ({', '.join(RUNTIMES)}), "
            f"not {artifact_format!r}"
        )
    implementation, file_name = RUNTIMES[artifact_format]
    return {
        "name": MODEL_NAME,
        "implementation": implementation,
        "max_batch_size": MAX_BATCH_SIZE,
        "max_batch_time": MAX_BATCH_TIME_S,
        "parameters": {"uri": f"./{file_name}", "version": version},
    }


def write_repository(
    root: Path, artifact: tuple[str, str, bytes], ports: Ports, workers: int
) -> Path:
    """The model repository for `mlserver start root`; artifact: (format, version, bytes)."""
    artifact_format, version, data = artifact
    settings = model_settings(artifact_format, version)
    model_dir = root / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(server_settings(ports, root, workers)))
    (model_dir / "model-settings.json").write_text(json.dumps(settings, indent=2))
    (model_dir / settings["parameters"]["uri"].removeprefix("./")).write_bytes(data)
    return root


def mlserver_env(environ: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    return env | {"OMP_NUM_THREADS": "1"}


def body_template(row: dict[str, float], feature: str) -> BodyTemplate:
    return BodyTemplate.from_tensor_row(row, feature, TENSOR, [OUTPUT])


def probabilities(answer: dict[str, Any]) -> list[float]:
    """The one row's class probabilities in an infer answer (checked, not assumed)."""
    outputs = {output["name"]: output for output in answer.get("outputs", [])}
    output = outputs.get(OUTPUT)
    if output is None or output["shape"][0] != 1:
        raise RuntimeError(f"MLServer's answer has no one-row {OUTPUT}: {answer}")
    return [float(value) for value in output["data"]]


def start_mlserver(
    command: Path, repository: Path, group: ProcessGroup, log: Path
) -> ManagedProcess:
    args = [str(command), "start", str(repository)]
    env = mlserver_env(dict(os.environ))
    return group.start(ManagedProcess("mlserver", args, log, env=env, cwd=repository))


def target(ports: Ports) -> Target:
    return Target("127.0.0.1", ports.http, INFER_PATH, {})


def active_artifact(store_path: Path) -> tuple[str, str, bytes]:
    """(format, version, bytes) of the registry's active model: what the bare app serves."""
    registry = Registry(LocalStore(store_path))
    meta = registry.catalog().resolve()
    return meta.artifact_format, meta.version, registry.read_artifact(meta)


def launch(
    command: Path, work_dir: Path, store_path: Path, group: ProcessGroup, workers: int
) -> Launched:
    """MLServer serving the active model; returns at once (the caller waits for READY_PATH)."""
    ports = Ports.free()
    repository = write_repository(
        work_dir / "mlserver", active_artifact(store_path), ports, workers
    )
    proc = start_mlserver(command, repository, group, work_dir / "mlserver.log")
    return Launched(proc, target(ports), f"http://127.0.0.1:{ports.metrics}/metrics")


def batch_counts(metrics_text: str) -> tuple[float, float]:
    """(infer requests answered, batches sent to the workers) so far, from the metrics."""
    requests = batches = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == REQUESTS_METRIC and sample.labels.get("path", "").endswith("/infer"):
                requests += sample.value
            elif sample.name == BATCHES_METRIC:
                batches += sample.value
    return requests, batches


def batch_totals(metrics_url: str) -> tuple[float, float]:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        return batch_counts(response.read().decode())
