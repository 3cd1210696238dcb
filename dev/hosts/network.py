"""Network namespaces joined by veth pairs to a bridge in a namespace of its own.

The subnet exists only inside the namespaces: the machine's own network namespace gets
no address, route or interface, so the hosts reach nothing but each other (and each its
own loopback, where nothing of the stack listens). Namespace names carry the creating
process's pid, so a bed left behind by a killed run is found and removed by the next
(`remove_stale`).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
PREFIX = "srvbed"  # every namespace this module makes: srvbed<pid>x<n>-<host>
NETNS_DIR = Path("/run/netns")
SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
_beds = count(1)


def run_ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def unavailable_reason() -> str | None:
    """Why this machine cannot make the namespaces, or None when it can."""
    if not Path("/proc/self/ns/net").exists():
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces, veths and cgroups need root (run the tests as root)"
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        return "the `ip` (iproute2) and `nsenter` (util-linux) commands are needed"
    probe = f"{PREFIX}probe{os.getpid()}"
    try:
        run_ip("netns", "add", probe)
    except RuntimeError as exc:
        return f"this machine does not allow network namespaces: {exc}"
    run_ip("netns", "delete", probe)
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete the namespaces of beds whose creating process is gone."""
    removed = []
    for path in NETNS_DIR.glob(f"{PREFIX}*") if NETNS_DIR.is_dir() else []:
        owner = path.name[len(PREFIX) :].split("x", 1)[0]
        if owner.isdigit() and not pid_alive(int(owner)):
            subprocess.run(["ip", "netns", "delete", path.name], capture_output=True, check=False)
            removed.append(path.name)
    return removed


@dataclass
class Host:
    name: str
    namespace: str
    address: str

    @property
    def enter(self) -> list[str]:
        """A command prefix that runs a program in this host's network namespace (and
        nothing else of it: same files, same users, same mounts)."""
        return ["nsenter", f"--net={NETNS_DIR / self.namespace}", "--"]


@dataclass
class Network:
    """A bridge (the switch) and hosts plugged into it, each with one address."""

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}x{next(_beds)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    _created: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-switch"

    def create(self) -> Network:
        self._add_namespace(self.switch)
        run_ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        run_ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def add_host(self, name: str, last_octet: int) -> Host:
        host = Host(name, f"{self.tag}-{name}", f"{SUBNET}.{last_octet}")
        self._add_namespace(host.namespace)
        port = self._port(name)
        # Both ends are made in their namespaces: no name ever appears in the machine's own.
        run_ip(
            "link", "add", "eth0", "netns", host.namespace,
            "type", "veth", "peer", "name", port, "netns", self.switch,
        )  # fmt: skip
        run_ip("-n", self.switch, "link", "set", port, "master", "br0")
        run_ip("-n", self.switch, "link", "set", port, "up")
        run_ip("-n", host.namespace, "link", "set", "lo", "up")
        run_ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
        run_ip("-n", host.namespace, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    @staticmethod
    def _port(name: str) -> str:
        return f"p-{name}"[:15]  # an interface name has at most 15 characters

    def set_link(self, name: str, up: bool) -> None:
        """Pull (or plug back) the host's cable: its switch port goes down."""
        run_ip("-n", self.switch, "link", "set", self._port(name), "up" if up else "down")

    def _add_namespace(self, namespace: str) -> None:
        run_ip("netns", "add", namespace)
        self._created.append(namespace)

    def remove(self) -> None:
        """Delete every namespace (their veths go with them). Safe to call again."""
        for namespace in reversed(self._created):
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)
        self._created.clear()

    def namespaces(self) -> list[str]:
        return list(self._created)


def _setns(namespace: str) -> None:
    fd = os.open(NETNS_DIR / namespace, os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python 3.12+
            os.setns(fd, CLONE_NEWNET)
        elif ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
    finally:
        os.close(fd)


def in_namespace(host: Host, fn: Callable[[], T]) -> T:
    """fn() on a thread of its own that joined the host's network namespace: every socket
    it opens is the host's (a network namespace is a per-thread attribute)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            _setns(host.namespace)
            outcome["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{host.name}", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
