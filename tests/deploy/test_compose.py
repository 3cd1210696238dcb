"""docker-compose.yml and .env.example, parsed with PyYAML (no Docker engine needed).

When a `docker compose` (or `docker-compose`) binary is on the PATH, the file is also
rendered by it with the placeholder values of .env.example.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

ONE_SHOT = {"create-bucket", "publish-models"}
LONG_RUNNING = {
    "api",
    "worker",
    "callback-worker",
    "redis",
    "minio",
    "flower",
    "prometheus",
    "grafana",
}
# AUTH$: FLOWER_BASIC_AUTH, REDISCLI_AUTH (not GF_AUTH_ANONYMOUS_ENABLED).
SECRET_KEY = re.compile(r"PASSWORD|SECRET|API_KEYS|AUTH$")
REQUIRED_VARIABLE = re.compile(r"^\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}$")
SERVING_ENV = {
    "SERVING_REDIS_URL": "redis://redis:6379/0",
    "SERVING_STORE_BACKEND": "s3",
    "SERVING_S3_ENDPOINT_URL": "http://minio:9000",
    "SERVING_DATABASE_URL": "sqlite:////data/predictions.db",
    "SERVING_LOG_FORMAT": "json",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "use the long depends_on form, with a condition"
    return {name: spec["condition"] for name, spec in deps.items()}


def split_outside_interpolation(text: str, separator: str = ":") -> list[str]:
    """Split on `separator`, except inside `${...}` (whose defaults hold colons)."""
    parts, current, depth = [], "", 0
    for i, char in enumerate(text):
        if text.startswith("${", i):
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        if char == separator and not depth:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def published_ports(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each short-form `ports` entry."""
    found = []
    for entry in service.get("ports", []):
        parts = split_outside_interpolation(str(entry))
        assert 1 <= len(parts) <= 3, entry
        address, port, container = ["", "", *parts][-3:]
        found.append((address, port, container))
    return found


def read_env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            values[key] = value
    return values


def test_is_a_compose_spec_file_without_version(compose: dict[str, Any]) -> None:
    assert "version" not in compose
    assert set(compose) <= {"name", "services", "volumes", "networks", "configs", "secrets"} | {
        key for key in compose if key.startswith("x-")
    }


def test_every_service_is_there(services: dict[str, Any]) -> None:
    assert set(services) == LONG_RUNNING | ONE_SHOT


def test_long_running_services_have_healthchecks_and_restart(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) >= 2, name
        assert {"interval", "timeout", "retries"} <= set(check), name
        assert services[name]["restart"] == "unless-stopped", name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name


def test_no_service_has_a_fixed_container_name(services: dict[str, Any]) -> None:
    assert [name for name, svc in services.items() if "container_name" in svc] == []


def test_worker_scales(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker  # replicas would clash on a host port
    assert worker["expose"] == ["9808"]
    assert worker["build"]["dockerfile"] == "Dockerfile.worker"
    assert worker["command"][:4] == ["python", "-m", "worker", "--concurrency"]
    assert environment(worker)["SERVING_WORKER_METRICS_PORT"] == "9808"
    assert worker["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.ping"]
    # Celery's warm shutdown lets the running task finish (hard limit 60 s by default).
    assert int(worker["stop_grace_period"].rstrip("s")) > Settings().task_time_limit_seconds


def test_api_service(services: dict[str, Any]) -> None:
    api = services["api"]
    assert api["build"]["dockerfile"] == "Dockerfile.api"
    api_command = ["python", "-m", "api", "--host", "0.0.0.0", "--port", "8000", "--workers"]
    assert api["command"][:8] == api_command
    assert [port for _, port, container in published_ports(api)] == ["${API_PORT:-8000}"]
    assert [container for _, _, container in published_ports(api)] == ["8000"]
    assert "http://127.0.0.1:8000/healthz" in " ".join(api["healthcheck"]["test"])


def redis_server_argv(services: dict[str, Any]) -> list[str]:
    """The redis-server line of the redis service's script, as argv."""
    redis = services["redis"]
    assert redis["entrypoint"] == ["/bin/sh", "-ec"]
    (script,) = redis["command"]
    (line,) = [line for line in script.splitlines() if "redis-server" in line]
    words = shlex.split(line)
    # Through the image's entrypoint, which drops root for the redis user.
    assert words[:3] == ["exec", "docker-entrypoint.sh", "redis-server"], line
    assert words[-2:] == ["-", "<<EOF"], line  # the config on stdin
    return words[2:-1]


def test_redis_is_private_and_never_evicts(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert "ports" not in redis
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-[a-z0-9.]+)?", redis["image"]), redis["image"]
    argv = redis_server_argv(services)
    assert argv[argv.index("--maxmemory-policy") + 1] == "noeviction"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    assert "redis-cli ping" in " ".join(redis["healthcheck"]["test"])
    assert "redis-data:/data" in redis["volumes"]


def test_redis_requires_a_password_given_on_stdin(services: dict[str, Any]) -> None:
    redis = services["redis"]
    env = environment(redis)
    for key in ("REDIS_PASSWORD", "REDISCLI_AUTH"):
        found = REQUIRED_VARIABLE.match(env[key])
        assert found and found.group(1) == "REDIS_PASSWORD", (key, env[key])
    argv = redis_server_argv(services)
    # `-` reads a config from stdin; Redis 7 takes it first or last only, and the
    # image's entrypoint may insert options right after `redis-server`: so last.
    assert argv[-1] == "-"
    assert not any("requirepass" in word or "$" in word for word in argv)
    script = redis["command"][0]
    body = script.split("<<EOF\n", 1)[1]
    assert body.splitlines()[:2] == ["requirepass $$REDIS_PASSWORD", "EOF"]
    # A password that would break the broker URLs stops Redis with a message instead.
    assert 'case "$$REDIS_PASSWORD" in' in script and "exit 1" in script


def test_redis_healthcheck_authenticates_from_the_environment(services: dict[str, Any]) -> None:
    redis = services["redis"]
    test = redis["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    # redis-cli takes REDISCLI_AUTH from the container's environment: no -a/--pass/--user
    # (those would show in `ps`), and a wrong or missing password fails the PONG check.
    assert not re.search(r"(^|\s)(-a|--pass|--user|--askpass)(\s|$)", test[1]), test[1]
    assert "grep -q PONG" in test[1]
    assert environment(redis)["REDISCLI_AUTH"] == environment(redis)["REDIS_PASSWORD"]


def test_callbacks_have_a_worker_of_their_own(services: dict[str, Any]) -> None:
    """The callback queue's consumer: the worker's image, on threads (worker/__main__.py),
    its warm shutdown longer than one delivery's deadline."""
    callbacks, worker = services["callback-worker"], services["worker"]
    assert callbacks["command"] == ["python", "-m", "worker", "--callbacks"]
    assert (callbacks["image"], callbacks["build"]) == (worker["image"], worker["build"])
    assert "container_name" not in callbacks and "ports" not in callbacks
    assert callbacks["healthcheck"]["test"] == ["CMD", "python", "-m", "worker.ping"]
    grace = int(callbacks["stop_grace_period"].rstrip("s"))
    assert grace > Settings().callback_timeout_seconds


def test_dependencies_wait_for_health_and_completion(services: dict[str, Any]) -> None:
    for name in ("api", "worker", "callback-worker"):
        deps = depends_on(services[name])
        assert deps["redis"] == "service_healthy", name
        assert deps["publish-models"] == "service_completed_successfully", name
    assert depends_on(services["publish-models"]) == {
        "create-bucket": "service_completed_successfully",
        "redis": "service_healthy",
    }
    assert depends_on(services["create-bucket"]) == {"minio": "service_healthy"}
    assert depends_on(services["flower"]) == {"redis": "service_healthy"}
    assert depends_on(services["grafana"]) == {"prometheus": "service_healthy"}


def test_conditions_match_the_dependencies(services: dict[str, Any]) -> None:
    """service_healthy only on a service with a healthcheck, and completion only on a
    one-shot service: otherwise `docker compose up` waits forever or fails."""
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if condition == "service_healthy":
                assert dep in LONG_RUNNING and services[dep].get("healthcheck"), (name, dep)
            else:
                assert condition == "service_completed_successfully", (name, dep, condition)
                assert dep in ONE_SHOT, (name, dep)


def test_secrets_come_only_from_required_variables(services: dict[str, Any]) -> None:
    checked = set()
    for name, service in services.items():
        for key, value in environment(service).items():
            if SECRET_KEY.search(key):
                message = f"{name}: {key}={value!r} is not ${{VAR:?message}}"
                assert REQUIRED_VARIABLE.match(value), message
                checked.add(key)
    assert {
        "SERVING_API_KEYS",
        "SERVING_ADMIN_API_KEYS",
        "SERVING_S3_SECRET_ACCESS_KEY",
        "MINIO_ROOT_PASSWORD",
        "FLOWER_BASIC_AUTH",
        "GF_SECURITY_ADMIN_PASSWORD",
        "REDIS_PASSWORD",
        "REDISCLI_AUTH",
        "SERVING_REDIS_PASSWORD",
    } <= checked


def test_one_redis_password_for_every_service(services: dict[str, Any]) -> None:
    """Redis, redis-cli, the serving services and Flower all take REDIS_PASSWORD."""
    users = {}
    for name, service in services.items():
        for key, value in environment(service).items():
            if key in {"REDIS_PASSWORD", "REDISCLI_AUTH", "SERVING_REDIS_PASSWORD"}:
                users[(name, key)] = REQUIRED_VARIABLE.match(value).group(1)  # type: ignore[union-attr]
    assert set(users.values()) == {"REDIS_PASSWORD"}
    assert {name for name, _ in users} == {
        "redis",
        "api",
        "worker",
        "callback-worker",
        "publish-models",
        "flower",
    }


def test_secrets_never_reach_a_command_line(services: dict[str, Any]) -> None:
    """Commands see secrets through their environment (`$$VAR` in the shell), so they
    show neither in `docker inspect`'s command nor in `ps`."""
    secret_variables = {
        REQUIRED_VARIABLE.match(value).group(1)  # type: ignore[union-attr]
        for service in services.values()
        for key, value in environment(service).items()
        if SECRET_KEY.search(key)
    }
    assert "REDIS_PASSWORD" in secret_variables
    for name, service in services.items():
        # The healthcheck's command shows in `docker inspect` and `ps` as well.
        healthcheck = service.get("healthcheck", {}).get("test", [])
        argv = service.get("command", []) + service.get("entrypoint", []) + healthcheck
        text = " ".join(argv) if isinstance(argv, list) else str(argv)
        for variable in secret_variables:
            assert f"${{{variable}" not in text, f"{name} puts {variable} on its command line"
    for name, secrets in [
        ("create-bucket", ["$$MINIO_ROOT_PASSWORD", "$$SERVING_S3_SECRET_ACCESS_KEY"]),
        ("redis", ["$$REDIS_PASSWORD"]),
        ("flower", ["$$REDIS_PASSWORD"]),
    ]:
        script = services[name]["command"][0]
        for secret in secrets:
            assert secret in script, (name, secret)
        assert "${" not in script, name


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [text for item in value.values() for text in strings_in(item)]
    if isinstance(value, list):
        return [text for item in value for text in strings_in(item)]
    return [value] if isinstance(value, str) else []


def test_env_example_lists_every_required_variable_with_a_placeholder(
    compose: dict[str, Any],
) -> None:
    text = COMPOSE_FILE.read_text()
    required = {
        name
        for value in strings_in(compose)
        for name in re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", value)
    }
    example = read_env_example()
    assert required == set(example), "the required variables and .env.example differ"
    for key, value in example.items():
        assert value, f"{key} has no placeholder"
        if SECRET_KEY.search(key):
            assert "change-me" in value, f"{key}: not an obvious placeholder"
            assert value not in text, f"{key}'s placeholder is written in docker-compose.yml"
    assert {
        "SERVING_API_KEYS",
        "MINIO_ROOT_PASSWORD",
        "GRAFANA_ADMIN_PASSWORD",
        "REDIS_PASSWORD",
    } <= required
    # It goes into Flower's broker URL as it is, and Redis refuses anything else.
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", example["REDIS_PASSWORD"])
    assert example["SERVING_S3_ACCESS_KEY_ID"] != example["MINIO_ROOT_USER"]


def test_services_share_the_serving_settings(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for name in ("api", "worker", "callback-worker", "publish-models"):
        env = environment(services[name])
        for key, value in SERVING_ENV.items():
            assert env[key] == value, (name, key)
        for key in env:
            # A misspelt SERVING_* variable would be ignored silently by the settings.
            assert key.startswith("SERVING_") and key[8:].lower() in fields, (name, key)
        # The settings add it to every Redis URL (common/redis_urls.py, with_credentials).
        assert env["SERVING_REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?"), name
    assert "SERVING_API_KEYS" in environment(services["api"])
    assert "SERVING_API_KEYS" not in environment(services["worker"])
    assert "SERVING_API_KEYS" not in environment(services["callback-worker"])


def test_api_and_workers_share_the_sqlite_volume(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    for name in ("api", "worker", "callback-worker"):
        assert "predictions:/data" in services[name]["volumes"], name
    assert "predictions" in compose["volumes"]


def test_publish_models_runs_modelctl_from_the_worker_image(services: dict[str, Any]) -> None:
    publish, worker = services["publish-models"], services["worker"]
    assert publish["command"] == ["python", "-m", "modelctl", "train-demo", "--if-empty"]
    assert publish["image"] == worker["image"]
    assert publish["build"] == worker["build"]
    assert publish["healthcheck"] == {"disable": True}


def test_bucket_service_creates_the_bucket_and_its_user(services: dict[str, Any]) -> None:
    bucket = services["create-bucket"]
    assert bucket["image"].startswith("quay.io/minio/mc:RELEASE.")
    script = bucket["command"][0]
    for step in [
        "mc alias set local http://minio:9000",
        "mc mb --ignore-existing",
        "mc admin policy create local serving-models",
        "mc admin user add",
        "mc admin policy attach local serving-models",
    ]:
        assert step in script, step
    assert bucket["entrypoint"] == ["/bin/sh", "-ec"]  # stop at the first failing step


def test_minio_keeps_its_s3_port_inside_the_network(services: dict[str, Any]) -> None:
    minio = services["minio"]
    assert minio["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    for address, _, container in published_ports(minio):
        assert container != "9000"
        assert address == "127.0.0.1"


def test_flower_service(services: dict[str, Any]) -> None:
    flower = services["flower"]
    assert re.fullmatch(r"mher/flower:\d+\.\d+\.\d+", flower["image"])
    assert flower["entrypoint"] == ["/bin/sh", "-ec"]
    # Celery reads CELERY_BROKER_URL: the password stays out of Flower's argv.
    assert flower["command"] == [
        'export CELERY_BROKER_URL="redis://:$$REDIS_PASSWORD@redis:6379/0"\n'
        "exec celery flower --port=5555\n"
    ]
    assert environment(flower)["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "http://127.0.0.1:5555/healthcheck" in " ".join(flower["healthcheck"]["test"])
    assert [container for _, _, container in published_ports(flower)] == ["5555"]


def test_prometheus_service(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", prometheus["image"])
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "./deploy/prometheus:/etc/prometheus/deploy/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    # No login in Prometheus: published on the loopback unless the operator says otherwise.
    assert published_ports(prometheus) == [
        ("${MONITORING_BIND_ADDRESS:-127.0.0.1}", "${PROMETHEUS_PORT:-9090}", "9090")
    ]


def test_grafana_service(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"])
    env = environment(grafana)
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    targets = {volume.split(":")[1] for volume in grafana["volumes"]}
    assert {
        "/etc/grafana/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards",
        "/var/lib/grafana",
    } <= targets
    assert [container for _, _, container in published_ports(grafana)] == ["3000"]


def test_images_are_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_targets_are_compose_services(services: dict[str, Any]) -> None:
    """The scrape targets of prometheus.yml name these services and their ports."""
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    ports = {
        "api": {container for _, _, container in published_ports(services["api"])},
        "worker": set(services["worker"]["expose"]),
        "callback-worker": set(services["callback-worker"]["expose"]),
        "flower": {container for _, _, container in published_ports(services["flower"])},
    }
    seen = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                if host in ports:
                    assert port in ports[host], target
                    seen.add(host)
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                assert str(dns["port"]) in ports[host], host
                seen.add(host)
    assert seen == {"api", "worker", "callback-worker", "flower"}


def _compose_binary() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.skipif(_compose_binary() is None, reason="no docker compose binary on the PATH")
def test_docker_compose_renders_the_file() -> None:
    binary = _compose_binary()
    assert binary is not None
    done = subprocess.run(
        [*binary, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
