"""Shared fixtures: real private services, started on free ports, never the machine's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.services import start_redis, start_s3_server


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
