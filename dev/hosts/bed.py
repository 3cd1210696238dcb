"""The serving stack on several hosts of one machine (network namespaces, dev.hosts.network).

    services  10.77.0.10   Redis :6379, S3 (moto) :5000, PostgreSQL :5432
    api       10.77.0.20   python -m api :8000
    worker-N  10.77.0.3N   python -m worker, CPU-capped (dev.hosts.cpu)
    client    10.77.0.50   where load generators and test clients run

Every host has its own network stack, so each uses the standard ports, and the workers
reach Redis, S3 and PostgreSQL over the bridge only: their loopback has nothing on it.
`stop()` (or leaving the `with` block, however it is left) removes every process, group
and namespace the bed made; `start()` first removes what a killed earlier run left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3

from common.registry import Registry
from common.settings import Settings
from common.store import create_store
from common.training import TrainedModel
from dev.hosts import cpu, network
from dev.hosts.cpu import CpuCap
from dev.hosts.network import Host, Network, in_namespace
from dev.postgres import start_postgres, stop_postgres
from dev.services import (
    ManagedProcess,
    Placement,
    group_members,
    start_redis,
    start_s3_server,
    wait_until,
)

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
API_PORT = 8000
KEY = "bed-reader-key-0123456789"
ADMIN_KEY = "bed-admin-key-0123456789"


def unavailable_reason() -> str | None:
    return network.unavailable_reason() or cpu.unavailable_reason()


@dataclass
class BedPlan:
    worker_hosts: int = 2
    worker_cpus: float = 0.5  # each worker host's share of the machine's CPU time
    worker_cpu_period_us: int = cpu.PERIOD_US  # the quota's period (cpu.max's second field)
    worker_concurrency: int = 2  # prefork pool processes per worker host
    api_processes: int = 1
    settings: dict[str, Any] = field(default_factory=dict)  # more SERVING_* settings


@dataclass
class TestBed:
    plan: BedPlan
    work_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="serving-bed-")))
    net: Network = field(default_factory=Network)
    caps: dict[str, CpuCap] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    cgroups: list[Path] = field(default_factory=list)  # every group it made, for leftovers()
    __test__ = False  # not a pytest class

    # --- the hosts ------------------------------------------------------------------

    @property
    def services(self) -> Host:
        return self.net.hosts["services"]

    @property
    def api(self) -> Host:
        return self.net.hosts["api"]

    @property
    def client(self) -> Host:
        return self.net.hosts["client"]

    @property
    def api_url(self) -> str:
        return f"http://{self.api.address}:{API_PORT}"

    def worker_names(self) -> list[str]:
        return [name for name in self.net.hosts if name.startswith("worker")]

    def run_on(self, host: Host, fn: Callable[[], T]) -> T:
        return in_namespace(host, fn)

    # --- starting and stopping ------------------------------------------------------

    def start(self, publish: Callable[[TestBed], None]) -> TestBed:
        """Hosts, services, `publish(bed)` (models into the store), API and workers."""
        network.remove_stale()
        cpu.remove_stale()
        try:
            self._make_hosts()
            self._start_services()
            publish(self)
            for name in self.worker_names():
                self.start_worker(name)
            self._start_api()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _make_hosts(self) -> None:
        self.net.create()
        for name, octet in (("services", 10), ("api", 20), ("client", 50)):
            self.net.add_host(name, octet)
        for i in range(1, self.plan.worker_hosts + 1):
            self.net.add_host(f"worker{i}", 30 + i)

    def _at(self, host: Host) -> Placement:
        return Placement(host.address, tuple(host.enter), lambda check: in_namespace(host, check))

    def _start_services(self) -> None:
        at = self._at(self.services)
        self.processes["redis"], redis_url = start_redis(self.work_dir / "redis", 6379, at=at)
        self.processes["s3"], s3_url = start_s3_server(self.work_dir, 5000, at=at)
        subnet = f"{network.SUBNET}.0/24"
        self.processes["postgres"], db_url = start_postgres(
            self.work_dir / "postgres", 5432, at=at, clients=subnet
        )
        self.fields = {
            "redis_url": redis_url,
            "store_backend": "s3",
            "s3_endpoint_url": s3_url,
            "s3_bucket": "models",
            "s3_access_key_id": "bed",
            "s3_secret_access_key": "bed",
            "database_url": db_url,
            "api_keys": KEY,
            "admin_api_keys": ADMIN_KEY,
            "log_level": "INFO",
            **self.plan.settings,
        }

    def env(self, host: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SERVING_")}
        env.update({f"SERVING_{k.upper()}": str(v) for k, v in self.fields.items()})
        env["SERVING_METRICS_DIR"] = str(self.work_dir / host / "metrics")
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start_worker(self, name: str) -> ManagedProcess:
        host = self.net.hosts[name]
        if name not in self.caps:
            self.caps[name] = CpuCap.create(
                name, self.plan.worker_cpus, self.plan.worker_cpu_period_us
            )
            self.cgroups.append(self.caps[name].path)
        cap = self.caps[name]
        args = [
            *host.enter,
            sys.executable,
            "-m",
            "worker",
            "--concurrency",
            str(self.plan.worker_concurrency),
            "-n",
            f"{name}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
        log = self.work_dir / name / "worker.log"
        proc = ManagedProcess(name, cap.wrap(args), log, env=self.env(name), cwd=ROOT)
        self.processes[name] = proc.start()
        return proc

    def _start_api(self) -> None:
        args = [*self.api.enter, sys.executable, "-m", "api", "--host", self.api.address]
        args += ["--port", str(API_PORT), "--workers", str(self.plan.api_processes)]
        log = self.work_dir / "api" / "api.log"
        self.processes["api"] = ManagedProcess("api", args, log, env=self.env("api"), cwd=ROOT)
        self.processes["api"].start()

    def wait_ready(self, timeout: float = 120) -> None:
        """The API answers, and every worker host's worker ran a ping sent to it alone."""
        import httpx

        def api_up() -> bool:
            self._check_alive()
            try:
                return httpx.get(self.api_url + "/", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(lambda: self.run_on(self.client, api_up), timeout, "the bed's API")
        pings = {name: self.ping(name, wait=False) for name in self.worker_names()}
        for name, ping in pings.items():
            if ping.wait(timeout) != 0:
                raise RuntimeError(f"{name} did not answer: {self.processes[name].log_tail()}")

    def ping(self, name: str, wait: bool = True) -> subprocess.Popen[bytes]:
        """`python -m worker.ping` from the worker's own host, to that worker alone."""
        host = self.net.hosts[name]
        hostname = os.uname().nodename
        args = [*host.enter, sys.executable, "-m", "worker.ping", f"{name}@{hostname}"]
        proc = subprocess.Popen(
            args, env=self.env(name), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if wait:
            proc.wait(120)
        return proc

    def _check_alive(self) -> None:
        for proc in self.processes.values():
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")

    def cut(self, name: str) -> None:
        """Link down: the host keeps running, and reaches nothing and nobody reaches it."""
        self.net.set_link(name, up=False)

    def reconnect(self, name: str) -> None:
        self.net.set_link(name, up=True)

    def stop(self) -> None:
        """Every process, then every CPU group, then every namespace. Safe to call again."""
        try:
            for proc in self.processes.values():
                proc.begin_stop()
            for name, proc in reversed(self.processes.items()):
                stop_postgres(proc) if name == "postgres" else proc.stop()
        finally:
            for cap in self.caps.values():
                cap.remove()
            self.caps.clear()
            self.net.remove()

    def leftovers(self) -> list[str]:
        """What of the bed still exists (after stop(): nothing)."""
        netns = network.NETNS_DIR
        found = [f"namespace {p.name}" for p in netns.glob(f"{self.net.tag}-*")]
        found += [f"cgroup {path}" for path in self.cgroups if path.exists()]
        found += [
            f"process {proc.name} ({pid})"
            for proc in self.processes.values()
            if proc.popen is not None
            for pid in group_members(proc.pid)
        ]
        return found

    def __enter__(self) -> TestBed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_models(
    models: dict[str, TrainedModel], extra: Callable[[Registry], None] | None = None
) -> Callable[[TestBed], None]:
    """A `publish` for TestBed.start: the bucket, then each model, active; xgboost the
    default; then `extra(registry)`. From the client host, over the bridge, like any
    other S3 client."""

    def publish(bed: TestBed) -> None:
        def upload() -> None:
            settings = Settings(**bed.fields)
            boto3.client(
                "s3",
                endpoint_url=settings.s3_endpoint_url,
                region_name="us-east-1",
                aws_access_key_id="bed",
                aws_secret_access_key="bed",  # noqa: S106  # moto takes any credentials
            ).create_bucket(Bucket=settings.s3_bucket)
            registry = Registry(create_store(settings))
            for model_type, trained in models.items():
                registry.publish(
                    trained.metadata,
                    trained.artifact,
                    activate=True,
                    make_default=model_type == "xgboost",
                )
            if extra is not None:
                extra(registry)

        bed.run_on(bed.client, upload)

    return publish
