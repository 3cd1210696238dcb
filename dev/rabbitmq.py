"""A private RabbitMQ node on free ports, for the tests that run the stack on AMQP.

The machine's own RabbitMQ (5672) and its epmd (4369) are never touched: the node has
a name, ports, an epmd, a cookie (in a HOME of its own) and data folders of its own,
listens on 127.0.0.1 only, and runs no plugin (no management listener).

    proc, url = start_rabbitmq(work_dir, vhosts=8)  # amqp://guest:guest@127.0.0.1:<port>//
    vhost_url(url, 3)                               # .../s3: a vhost of its own, like a
                                                    # Redis database number
    rabbitmqctl(proc, "list_queues", "-p", "s3", "name", "type")
    proc.stop()                                     # the node, then its epmd
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dev.services import ManagedProcess, free_port, tcp_open, wait_until

# Debian's /usr/sbin/rabbitmq-server is a wrapper that, run as root, switches to the
# `rabbitmq` user with `su`, which drops the environment that makes this node private.
# The scripts it calls run the node as whoever starts them.
SCRIPT_DIRS = (Path("/usr/lib/rabbitmq/bin"),)
BOOT_TIMEOUT = 90.0  # a first boot creates the node's database; about 5 s here


class RabbitMQUnavailable(RuntimeError):
    """No usable rabbitmq-server (or epmd) on this machine; the message says why."""


def find_rabbitmq_script(name: str = "rabbitmq-server") -> str:
    """The real `rabbitmq-server` (or `rabbitmqctl`) script, not Debian's su wrapper."""
    for folder in SCRIPT_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found and "rabbitmq-script-wrapper" not in Path(found).resolve().name:
        return found
    raise RabbitMQUnavailable(
        f"no {name} found: install RabbitMQ (e.g. `apt-get install rabbitmq-server`)"
    )


def find_epmd() -> str:
    found = shutil.which("epmd")
    if found is None:
        raise RabbitMQUnavailable("no epmd found (Erlang's port mapper, part of erlang-base)")
    return found


@dataclass
class RabbitNode(ManagedProcess):
    """The node's process; stopping it also stops the epmd started for it."""

    node: str = ""
    epmd: ManagedProcess | None = None
    ctl_env: dict[str, str] = field(default_factory=dict)

    def begin_stop(self) -> None:
        super().begin_stop()  # the node first: it deregisters from its epmd as it stops

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        if self.epmd is not None:
            self.epmd.stop()


def definitions(vhosts: int) -> dict[str, Any]:
    """The default vhost and s1 ... s<vhosts - 1>, each open to guest, loaded at boot:
    one boot instead of two rabbitmqctl calls (about 0.7 s) per vhost."""
    names = ["/"] + [f"s{i}" for i in range(1, vhosts)]
    salt = secrets.token_bytes(4)  # RabbitMQ's SHA-256 scheme: base64(salt + sha256(salt + pw))
    digest = base64.b64encode(salt + hashlib.sha256(salt + b"guest").digest()).decode()
    user = {
        "name": "guest",
        "password_hash": digest,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": ["administrator"],
    }
    grant = {"configure": ".*", "write": ".*", "read": ".*"}
    return {
        "users": [user],
        "vhosts": [{"name": name} for name in names],
        "permissions": [{"user": "guest", "vhost": name, **grant} for name in names],
    }


def vhost_url(url: str, index: int) -> str:
    """The URL of vhost `s<index>` (index 0: the default vhost)."""
    return url if index == 0 else f"{url.rstrip('/')}/s{index}"


def write_config(work_dir: Path, vhosts: int) -> None:
    config = ["log.console = true", "log.file = false"]
    if vhosts > 1:
        path = work_dir / "definitions.json"
        path.write_text(json.dumps(definitions(vhosts)))
        config += [
            "definitions.import_backend = local_filesystem",
            f"definitions.local.path = {path}",
        ]
    (work_dir / "rabbitmq.conf").write_text("\n".join(config) + "\n")
    (work_dir / "enabled_plugins").write_text("[].\n")  # no plugin: no management listener
    (work_dir / "rabbitmq-env.conf").write_text("")


def node_env(work_dir: Path, node: str, port: int, epmd_port: int) -> dict[str, str]:
    """Every path and port of the node, so nothing of the system's installation is used:
    not /etc/rabbitmq (its env file names the system's node), nor /var/lib/rabbitmq."""
    home = work_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    cookie = home / ".erlang.cookie"
    if not cookie.exists():
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)  # Erlang refuses a cookie others can read
    ctl_port = free_port()
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "RABBITMQ_CONF_ENV_FILE": str(work_dir / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(work_dir / "rabbitmq.conf"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(work_dir / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(work_dir / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(work_dir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(work_dir / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "RABBITMQ_CTL_DIST_PORT_MIN": str(ctl_port),
        "RABBITMQ_CTL_DIST_PORT_MAX": str(ctl_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        # Distribution (the CLI tools' channel to the node) on loopback only, and no
        # epmd started by `erl` itself: it would daemonize, outliving stop().
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "ERL_FLAGS": "-start_epmd false",
    }


def amqp_answers(port: int, vhost: str = "/") -> bool:
    import amqp

    connection = amqp.Connection(f"127.0.0.1:{port}", virtual_host=vhost, connect_timeout=1)
    try:
        connection.connect()
    except Exception:  # refused, reset, or the node still booting (a handshake error)
        return False
    connection.close()
    return True


def start_rabbitmq(work_dir: Path, vhosts: int = 1) -> tuple[RabbitNode, str]:
    """A RabbitMQ node, its epmd, and the AMQP URL of its default vhost (guest, which
    RabbitMQ accepts from loopback only); `vhosts` - 1 more (`vhost_url`). Returns once
    it accepts AMQP connections."""
    server = find_rabbitmq_script()
    work_dir.mkdir(parents=True, exist_ok=True)
    write_config(work_dir, vhosts)
    port, epmd_port = free_port(), free_port()
    node = f"serving-{port}@localhost"
    env = node_env(work_dir, node, port, epmd_port)
    epmd = ManagedProcess(
        "epmd",
        [find_epmd(), "-port", str(epmd_port), "-address", "127.0.0.1"],
        work_dir / "epmd.log",
        env=env,
    ).start()
    rabbit = RabbitNode("rabbitmq", [server], work_dir / "rabbitmq.log", env=env, cwd=work_dir)
    rabbit.node, rabbit.epmd, rabbit.ctl_env = node, epmd, env
    try:
        wait_until(lambda: tcp_open("127.0.0.1", epmd_port), 10, "epmd")
        rabbit.start()
        # The last vhost too: the definitions are imported as the node boots.
        last = f"s{vhosts - 1}" if vhosts > 1 else "/"
        wait_until(lambda: _booted(rabbit, port, last), BOOT_TIMEOUT, "rabbitmq-server")
    except TimeoutError:
        rabbit.stop()
        epmd.stop()
        raise RabbitMQUnavailable(f"rabbitmq-server did not start: {rabbit.log_tail()}") from None
    except BaseException:  # Ctrl-C meanwhile: the node, in a session of its own, missed it
        rabbit.stop()
        epmd.stop()
        raise
    return rabbit, f"amqp://guest:guest@127.0.0.1:{port}//"


def _booted(rabbit: RabbitNode, port: int, vhost: str) -> bool:
    if not rabbit.alive():
        raise TimeoutError("rabbitmq-server exited")  # reported with its log's tail
    return amqp_answers(port, vhost)


def rabbitmqctl(rabbit: RabbitNode, *args: str, timeout: float = 60) -> str:
    """`rabbitmqctl -n <node> ARGS` against this node (its cookie, its epmd); stdout."""
    done = subprocess.run(
        [find_rabbitmq_script("rabbitmqctl"), "-q", "-n", rabbit.node, *args],
        env=rabbit.ctl_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout
