"""The test bed itself: hosts that reach each other and nothing else, and nothing of it
left behind, after a failure too."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dev.hosts import cpu, network
from dev.hosts.cpu import CpuCap
from dev.hosts.network import Network, in_namespace
from dev.services import ManagedProcess, group_members, wait_until

pytestmark = pytest.mark.usefixtures("hosts_or_skip")


def can_connect(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


def listener(host: network.Host, port: int, tmp: Path) -> ManagedProcess:
    code = (
        "import socket, time; s = socket.socket(); "
        f"s.bind(({host.address!r}, {port})); s.listen(); time.sleep(600)"
    )
    args = [*host.enter, sys.executable, "-c", code]
    return ManagedProcess(f"listen-{host.name}", args, tmp / f"{host.name}.log").start()


def test_hosts_reach_each_other_over_the_bridge_and_not_the_machine(tmp_path: Path) -> None:
    net = Network().create()
    try:
        a, b = net.add_host("a", 11), net.add_host("b", 12)
        server = listener(a, 6379, tmp_path)
        try:
            assert in_namespace(b, lambda: _wait_connect(a.address, 6379))
            # The machine's own loopback is not theirs: its services (this machine runs
            # Redis on 6379) are out of reach. (Nothing here connects to a bed address from
            # the machine's own namespace: with no route of its own, that would leave the
            # machine by its default route.)
            assert not in_namespace(b, lambda: can_connect("127.0.0.1", 6379))
            routes = in_namespace(b, lambda: Path("/proc/thread-self/net/route").read_text())
            assert all(line.split()[1] != "00000000" for line in routes.splitlines()[1:])
            net.set_link("a", up=False)
            assert not in_namespace(b, lambda: can_connect(a.address, 6379))
            net.set_link("a", up=True)
            assert in_namespace(b, lambda: _wait_connect(a.address, 6379))
        finally:
            server.stop()
        own = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        own += subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
        assert network.SUBNET not in own  # the subnet exists only inside the namespaces
    finally:
        net.remove()
    assert not list(network.NETNS_DIR.glob(f"{net.tag}-*"))


def _wait_connect(address: str, port: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not can_connect(address, port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_cpu_cap_holds_its_processes_to_their_share(tmp_path: Path) -> None:
    cap = CpuCap.create("spin", 0.2)
    spin = ["sh", "-c", "while :; do :; done"]
    proc = ManagedProcess("spin", cap.wrap(spin), tmp_path / "spin.log").start()
    try:
        wait_until(lambda: proc.pid in cap.pids(), 10, "the spinner in its group")
        before = _cpu_seconds(proc.pid)
        subprocess.run(["sleep", "2"], check=True)
        used = _cpu_seconds(proc.pid) - before
        print(f"capped at 0.2 CPU, a busy loop used {used / 2:.2f} CPU")
        assert used < 2 * 0.2 * 1.5  # uncapped it would take a whole core, 2 s
        assert cap.throttled_seconds() > 0
    finally:
        proc.stop()
        cap.remove()
    assert not cap.path.exists()


def test_a_failure_inside_the_bed_leaves_nothing_behind(tmp_path: Path) -> None:
    net = Network().create()
    host = net.add_host("h", 21)
    cap = CpuCap.create("h", 0.5)
    sleeper = ManagedProcess("sleep", cap.wrap([*host.enter, "sleep", "600"]), tmp_path / "s.log")
    pid = sleeper.start().pid
    with pytest.raises(RuntimeError, match="a test failed here"):
        try:
            raise RuntimeError("a test failed here")
        finally:  # what TestBed.stop does, whatever happened
            cap.remove()
            net.remove()
    sleeper.stop()
    assert not group_members(pid)
    assert not cap.path.exists()
    assert not list(network.NETNS_DIR.glob(f"{net.tag}-*"))


def test_what_a_killed_run_left_is_removed_by_the_next() -> None:
    dead = _dead_pid()
    name = f"{network.PREFIX}{dead}x1-services"
    network.run_ip("netns", "add", name)
    root = cpu.cpu_root()
    assert root is not None
    group = root[0] / f"{network.PREFIX}{dead}-worker1"
    group.mkdir()
    assert name in network.remove_stale()
    assert group in cpu.remove_stale()
    assert not (network.NETNS_DIR / name).exists() and not group.exists()


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    assert not os.path.exists(f"/proc/{done.pid}")
    return done.pid


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
