"""The private RabbitMQ node of dev/rabbitmq.py: its own epmd and ports, on loopback
only, gone (epmd too) once stopped; and the skip, with its reason, where there is no
rabbitmq-server. The machine's own RabbitMQ and epmd are never queried."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from pathlib import Path

import pytest

import tests.rabbitmq
from dev.rabbitmq import RabbitMQUnavailable, amqp_answers, find_epmd
from dev.services import group_members
from tests.rabbitmq import rabbitmq_or_skip

pytestmark = pytest.mark.integration

SYSTEM_EPMD_PORT = 4369


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses the processes listen on (TCP, IPv4 and IPv6), from /proc."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table, size in [("tcp", 4), ("tcp6", 16)]:
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address = bytes.fromhex(fields[1].split(":")[0])
                # /proc writes each 32-bit word in host (little-endian) order.
                words = [address[i : i + 4][::-1] for i in range(0, size, 4)]
                found.add(str(ipaddress.ip_address(b"".join(words))))
    return found


def test_a_node_of_its_own_on_loopback_gone_with_its_epmd_once_stopped(tmp_path: Path) -> None:
    node, url = rabbitmq_or_skip(tmp_path, vhosts=3)
    try:
        epmd_port = int(node.ctl_env["ERL_EPMD_PORT"])
        assert epmd_port != SYSTEM_EPMD_PORT and node.epmd is not None
        names = subprocess.run(
            [find_epmd(), "-port", str(epmd_port), "-names"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert f"name {node.node.split('@')[0]} at port" in names, names  # in its own epmd
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert amqp_answers(port, "s2")  # the extra vhosts are there once it has booted
        pids = group_members(node.pid) + group_members(node.epmd.pid)
        addresses = listening_addresses(pids)
        assert addresses and addresses <= {"127.0.0.1", "::1"}, addresses
    finally:
        node.stop()
    assert node.epmd is not None and not node.epmd.alive()
    assert group_members(node.pid) == [] and group_members(node.epmd.pid) == []
    assert not amqp_answers(port)


@pytest.mark.parametrize(
    ("apt_get", "uid", "reason"),
    [
        (None, 0, "rabbitmq-server is not installed and there is no apt-get"),
        ("/usr/bin/apt-get", 1000, "run `apt-get install rabbitmq-server`"),
    ],
)
def test_without_rabbitmq_the_tests_skip_saying_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, apt_get: str | None, uid: int, reason: str
) -> None:
    def missing(name: str = "rabbitmq-server") -> str:
        raise RabbitMQUnavailable(f"no {name} found")

    monkeypatch.setattr(tests.rabbitmq, "find_rabbitmq_script", missing)
    monkeypatch.setattr("shutil.which", lambda _: apt_get)
    monkeypatch.setattr("os.geteuid", lambda: uid)
    with pytest.raises(pytest.skip.Exception, match="no RabbitMQ for --broker=rabbitmq") as skip:
        rabbitmq_or_skip(tmp_path, vhosts=1)
    assert reason in str(skip.value)
