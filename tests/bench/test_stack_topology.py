"""make bench's --worker-pool and --api-workers: the command lines they give the stack."""

from __future__ import annotations

import sys

import pytest

from bench.stack import Topology, service_args
from bench.sync_options import parse_args


def test_the_defaults_are_prefork_and_one_api_process() -> None:
    topology = Topology.of(parse_args([], None))

    assert topology == Topology("prefork", 1)
    assert service_args("worker", None, topology)[1:] == [
        "-m", "worker", "--concurrency", "2", "--pool", "prefork",
    ]  # fmt: skip


def test_threads_and_two_api_processes_reach_the_command_lines() -> None:
    topology = Topology.of(parse_args(["--worker-pool", "threads", "--api-workers", "2"], None))

    assert service_args("worker", None, topology)[-2:] == ["--pool", "threads"]
    assert service_args("api", 8123, topology) == [
        sys.executable, "-m", "api", "--port", "8123", "--workers", "2",
    ]  # fmt: skip
    assert topology.describe() == {
        "worker": "python -m worker --concurrency 2 --pool threads",
        "api": "python -m api --workers 2",
    }


@pytest.mark.parametrize("argv", [["--api-workers", "0"], ["--worker-pool", "gevent"]])
def test_a_bad_topology_is_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv, None)

    assert info.value.code == 2
