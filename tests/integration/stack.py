"""A real stack for integration tests: API (uvicorn) and Celery worker as subprocesses,
talking to the session's private Redis and S3-compatible server."""

from __future__ import annotations

import os
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
from kombu.connection import Connection
from prometheus_client.parser import text_string_to_metric_families

from common.cards.publish import DrawnCard
from common.registry import Registry
from common.settings import Settings
from common.store import create_store
from common.training import TrainedModel
from dev.services import ManagedProcess, free_port, wait_until
from queueing.config import broker_url

ROOT = Path(__file__).resolve().parents[2]
READER_KEY = "reader-key-for-tests"
ADMIN_KEY = "admin-key-for-tests"
CALLBACK_SECRET = "callback-secret-for-tests"
# One TLS context for every client the tests make: httpx builds one per client otherwise
# (18 ms each, loading the CA bundle), for URLs that are plain HTTP anyway.
TLS = ssl.create_default_context()


def stack_fields(
    name: str, redis_url: str, s3_endpoint: str, tmp: Path, db_index: int
) -> dict[str, Any]:
    base = redis_url.rsplit("/", 1)[0]
    return {
        "redis_url": f"{base}/{db_index}",
        "store_backend": "s3",
        "s3_endpoint_url": s3_endpoint,
        "s3_bucket": f"models-{name}",
        "s3_prefix": "registry",
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
        "database_url": f"sqlite:///{tmp / 'predictions.db'}",
        "api_keys": READER_KEY,
        "admin_api_keys": ADMIN_KEY,
        "task_queue": f"predictions-{name}",
        "cache_prefix": f"{name}:",
        "predict_timeout_seconds": 20,
        "max_body_bytes": 2_000_000,
        "max_rows_per_request": 1000,
        "registry_cache_seconds": 60,
        "log_level": "INFO",
        "worker_metrics_port": free_port(),
        "callback_secret": CALLBACK_SECRET,
        # The tests' receivers listen on 127.0.0.1, which callbacks may not reach unless
        # allowed (common/callbacks/addresses.py); the rest of loopback stays refused.
        "callback_allowed_networks": "127.0.0.1/32",
    }


@dataclass
class Stack:
    name: str
    fields: dict[str, Any]
    tmp: Path
    port: int = field(default_factory=free_port)
    processes: list[ManagedProcess] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings(**self.fields)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        # An override of None leaves the setting unset (its default), never the text "None".
        env.update(
            {f"SERVING_{k.upper()}": str(v) for k, v in self.fields.items() if v is not None}
        )
        env["PYTHONPATH"] = str(ROOT)
        return env

    def registry(self) -> Registry:
        return Registry(create_store(self.settings))

    def client(
        self, key: str | None = READER_KEY, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Client:
        headers = ({"X-API-Key": key} if key else {}) | (headers or {})
        kwargs.setdefault("verify", TLS)
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)

    def publish_demo(
        self, models: dict[str, TrainedModel], cards: dict[str, DrawnCard] | None = None
    ) -> None:
        """The demo models, active, xgboost the default; with their model cards if
        given (drawn once per session: a card takes a second to draw)."""
        settings = self.settings
        s3 = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket=settings.s3_bucket)
        registry = self.registry()
        for model_type, trained in models.items():
            meta = registry.publish(
                trained.metadata,
                trained.artifact,
                activate=True,
                make_default=model_type == "xgboost",
            )
            if cards is not None:
                cards[model_type].write(registry.store, meta)

    def start_worker(self, name: str, concurrency: int = 2) -> ManagedProcess:
        args = [
            sys.executable,
            "-m",
            "worker",
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        env = self.env
        if any(p.name.startswith("worker") for p in self.processes):
            # Workers on one host need ports of their own; `worker_metrics_port` is the first's.
            env["SERVING_WORKER_METRICS_PORT"] = str(free_port())
        proc = ManagedProcess(name, args, self.tmp / f"{name}.log", env=env, cwd=ROOT)
        self.processes.append(proc.start())
        return proc

    def start_callback_worker(self, name: str | None = None) -> ManagedProcess:
        """`python -m worker --callbacks`: the callback queue alone, on threads. Named
        `callbacks-...`, so `p.name.startswith("worker")` finds only prediction workers."""
        name = name or f"callbacks-{self.name}"
        args = [
            sys.executable,
            "-m",
            "worker",
            "--callbacks",
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        env = self.env | {"SERVING_WORKER_METRICS_PORT": str(free_port())}
        proc = ManagedProcess(name, args, self.tmp / f"{name}.log", env=env, cwd=ROOT)
        self.processes.append(proc.start())
        return proc

    def start(self, workers: int = 1, api_processes: int = 1, callback_workers: int = 0) -> Stack:
        for i in range(workers):
            self.start_worker(f"worker{i}-{self.name}")
        for i in range(callback_workers):
            self.start_callback_worker(f"callbacks{i}-{self.name}")
        self.start_api(api_processes)
        try:
            wait_until(self._healthy, 90, f"stack {self.name}")
        except TimeoutError:
            logs = "\n".join(f"--- {p.name}\n{p.log_tail()}" for p in self.processes)
            self.stop()
            raise RuntimeError(f"stack {self.name} did not start:\n{logs}") from None
        return self

    def start_api(self, api_processes: int = 1) -> ManagedProcess:
        api = ManagedProcess(
            "api",
            [
                sys.executable,
                "-m",
                "api",
                "--port",
                str(self.port),
                "--workers",
                str(api_processes),
            ],
            self.tmp / "api.log",
            env=self.env,
            cwd=ROOT,
        )
        self.processes.append(api.start())
        return api

    def _healthy(self) -> bool:
        for proc in self.processes:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
        try:
            return (
                httpx.get(
                    self.url + "/", headers={"X-API-Key": READER_KEY}, timeout=5, verify=TLS
                ).status_code
                == 200
            )
        except httpx.HTTPError:
            time.sleep(0.2)
            return False

    def purge_queue(self, queue: str) -> int:
        """Drop the messages waiting in a broker queue (Redis or RabbitMQ); how many."""
        with Connection(broker_url(self.settings)) as connection:  # type: ignore[no-untyped-call]
            return int(connection.default_channel.queue_purge(queue) or 0)

    def logs_text(self) -> str:
        return "\n".join(
            p.log_path.read_text(errors="replace") for p in self.processes if p.log_path.exists()
        )

    def stop(self) -> None:
        # Every process told at once, then each waited for: a stack stops in the time of
        # its slowest process, not of all of them in turn.
        for proc in reversed(self.processes):
            proc.begin_stop()
        for proc in reversed(self.processes):
            proc.stop()


def scrape(url: str) -> dict[str, float]:
    """Sample name with sorted labels -> value, e.g. 'serving_tasks_total{status=ok}'."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(url, timeout=10, verify=TLS).text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f"{k}={v}" for k, v in labels.items()]
    return sum(
        value
        for key, value in samples.items()
        if key.startswith(name + "{") and all(w in key for w in wanted)
    )
