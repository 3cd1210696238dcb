"""Shared fixtures: real private services, started on free ports, never the machine's own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.services import start_redis, start_s3_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--secrets-in",
        action="append",
        default=[],
        metavar="DIR",
        help="test_secrets_left_behind also scans DIR: the files of an earlier run (make "
        "test runs the suite on two processes first, then the scan after all of it)",
    )
    parser.addoption(
        "--broker",
        choices=("redis", "rabbitmq"),
        default="redis",
        help="the integration stacks' broker: the session's Redis (default), or a private "
        "RabbitMQ node (tests/rabbitmq.py; results and cache stay on Redis)",
    )


REDIS_BROKER_ONLY = "redis_broker_only"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{REDIS_BROKER_ONLY}(reason): a test of the Redis broker's own behaviour (its "
        "visibility timeout, its keys), skipped with the reason under --broker=rabbitmq",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--broker") == "redis":
        return
    for item in items:
        if (marker := item.get_closest_marker(REDIS_BROKER_ONLY)) is not None:
            reason = marker.args[0] if marker.args else "it tests the Redis broker"
            item.add_marker(pytest.mark.skip(reason=f"Redis broker only: {reason}"))


def _serving_variables() -> list[str]:
    return [name for name in os.environ if name.startswith("SERVING_")]


@pytest.fixture(scope="session", autouse=True)
def _no_serving_env_in_session() -> Iterator[None]:
    """Settings() reads SERVING_* variables: the machine's own must not leak into the
    session's fixtures either (the stacks and the Settings built for them)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in _serving_variables():
            patch.delenv(name)
        yield


@pytest.fixture(autouse=True)
def _clean_serving_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """And before each test: a variable an earlier test set must not reach the next one."""
    for name in _serving_variables():
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # A database per integration stack (tests/integration/conftest.py); Redis has 16 by default.
    proc, url = start_redis(tmp_path_factory.mktemp("redis"), extra_args=["--databases", "64"])
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, endpoint = start_s3_server(Path(tmp_path_factory.mktemp("s3")))
    yield endpoint
    proc.stop()
