"""One RabbitMQ node of the local HA cluster: its files, its process, and what a fault does to it.

A node is a plain ``rabbitmq-server`` from the Debian package run as the ``rabbitmq`` user, with
everything that could touch the machine's default node (``rabbit@localhost``) pointed elsewhere:
its own node name, AMQP, distribution and management ports, data and log directories,
``enabled_plugins`` and ``rabbitmq.conf``, and an empty ``rabbitmq-env.conf`` in place of
``/etc/rabbitmq/rabbitmq-env.conf`` (which names the default node). It shares two things with the
default node on purpose: the ``rabbitmq`` user's Erlang cookie (so the same CLI reaches every node)
and the machine's epmd on 127.0.0.1, which a kill must never touch.

Clustering uses classic_config peer discovery listing node 1: node 1 boots alone and forms the
cluster, nodes 2 and 3 find it on their first boot and join. A restarted node keeps its data
directory, so it rejoins from its own membership record, not by discovery.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos import services
from chaos.ha_processes import (
    DEADLINE,
    TopologyError,
    alive,
    all_pids,
    environment_of,
    kill_and_wait,
    run,
    signal_pid,
    stopped,
    until,
)

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
# The rabbitmq user's home holds the Erlang cookie that the nodes and the CLI share.
RABBIT_HOME = "/var/lib/rabbitmq"
RABBIT_USER = "rabbitmq"
GUEST = "guest:guest"


def node_name(slot: int, index: int) -> str:
    return f"chronoq-ha{slot}-{index}@localhost"


@dataclass
class RabbitNode:
    """Node ``index`` (1-3) of slot ``slot``; ports follow the slot: AMQP 5700+10K+i, dist 25700+10K+i, management 15700+10K+i."""

    slot: int
    index: int
    base: Path
    cluster_size: int = 3

    @property
    def name(self) -> str:
        return node_name(self.slot, self.index)

    @property
    def amqp_port(self) -> int:
        return 5700 + 10 * self.slot + self.index

    @property
    def dist_port(self) -> int:
        return 25700 + 10 * self.slot + self.index

    @property
    def mgmt_port(self) -> int:
        return 15700 + 10 * self.slot + self.index

    @property
    def dir(self) -> Path:
        return self.base / f"rabbit-{self.index}"

    @property
    def amqp_url(self) -> str:
        return f"amqp://{GUEST}@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        return f"http://{GUEST}@127.0.0.1:{self.mgmt_port}"

    # -- files and environment ------------------------------------------------------------

    def prepare(self) -> None:
        """Write this node's config files into a fresh directory owned by the rabbitmq user."""
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "log").mkdir(parents=True)
        (self.dir / "rabbitmq-env.conf").write_text("# Empty: /etc/rabbitmq/rabbitmq-env.conf names the default node.\n")
        (self.dir / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.dir / "rabbitmq.conf").write_text(self._config())
        for path in [self.dir, *self.dir.rglob("*")]:
            shutil.chown(path, user=RABBIT_USER, group=RABBIT_USER)

    def _config(self) -> str:
        first = node_name(self.slot, 1)
        return "\n".join([
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            "management.tcp.ip = 127.0.0.1",
            f"management.tcp.port = {self.mgmt_port}",
            # guest may log in from 127.0.0.1 only, as on the default node.
            "loopback_users.guest = true",
            "cluster_formation.peer_discovery_backend = classic_config",
            f"cluster_formation.classic_config.nodes.1 = {first}",
            # A node cut off from the majority (a hung machine coming back) pauses until it
            # sees the majority again instead of running as its own partition.
            "cluster_partition_handling = pause_minority",
            "",
        ])

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": RABBIT_HOME,
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            # The node's own pid file; ours (launched.pid) is written once, before the node
            # could rewrite it under a reader (a truncated file reads as "no pid").
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            # The machine's epmd listens on 127.0.0.1 only; distribution stays there too.
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            # The start script then execs the VM instead of forking it, so the pid we are
            # handed back is beam.smp's own.
            "RUNNING_UNDER_SYSTEMD": "true",
        }

    # -- process --------------------------------------------------------------------------

    def pid(self) -> int | None:
        """beam.smp's pid, if the process recorded for this node is alive and is this node."""
        try:
            pid = int((self.dir / "launched.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        return pid if alive(pid) and self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        # The launch execs sh -> erl -> erlexec -> beam.smp on one pid, all with this environment.
        # An epmd that a node started (when none ran) carries it too, but is shared: never ours.
        return environment_of(pid).get("RABBITMQ_NODENAME") == self.name and _comm(pid) != "epmd"

    def stray_pids(self) -> list[int]:
        """Every live process started for this node, recorded or not (a boot that failed half-way)."""
        return [pid for pid in all_pids() if alive(pid) and self._is_ours(pid)]

    def boot(self) -> int:
        """Start the VM detached from us (it outlives this process) and return its pid; does not wait."""
        launch = 'setsid "$@" </dev/null >>"$NODE_OUTPUT" 2>&1 & echo $!'
        env = self._environment() | {"NODE_OUTPUT": str(self.dir / "output.log")}
        started = subprocess.run(
            ["sh", "-c", launch, "sh", str(RABBIT_BIN / "rabbitmq-server")],
            env=env, cwd=self.dir, user=RABBIT_USER, group=RABBIT_USER, extra_groups=[],
            capture_output=True, text=True, check=True, timeout=30,
        )
        pid = int(started.stdout.split()[0])
        partial = self.dir / "launched.pid.tmp"
        partial.write_text(f"{pid}\n")
        partial.replace(self.dir / "launched.pid")
        return pid

    def ctl(self, *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
        """``rabbitmqctl -n <this node> <args>`` with the shared cookie."""
        return run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.name, *args], env=self._environment(), timeout=timeout)

    def diagnostics(self, *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
        return run([str(RABBIT_BIN / "rabbitmq-diagnostics"), "-n", self.name, *args], env=self._environment(), timeout=timeout)

    def running(self) -> bool:
        """True if the VM is up, not suspended, and its rabbit application runs."""
        pid = self.pid()
        if pid is None or stopped(pid):
            return False
        return self.diagnostics("-q", "check_running", timeout=15).returncode == 0

    # -- readiness ------------------------------------------------------------------------

    def _alive_while_booting(self) -> None:
        if self.pid() is None:
            try:
                output = (self.dir / "output.log").read_text(errors="replace").strip().splitlines()[-15:]
            except FileNotFoundError:
                output = ["(no output.log)"]
            raise TopologyError(f"{self.name} exited while booting; the end of {self.dir / 'output.log'}:\n"
                                + "\n".join(output))

    def _distributed(self) -> bool:
        """True once the VM listens on its distribution port: the CLI can reach it from then on."""
        self._alive_while_booting()
        return _listening(self.dist_port)

    def _booted(self) -> bool:
        self._alive_while_booting()
        return self.ctl("await_startup", "--timeout", "10", timeout=20).returncode == 0

    def serves_amqp(self) -> bool:
        return _listening(self.amqp_port)

    def api(self, path: str, timeout: float = 5.0) -> Any:
        """GET a management API path on this node; the decoded JSON, or None if it did not answer 200."""
        try:
            return services.management("GET", f"/api/{path}", broker=services.Broker(self.management_url), timeout=timeout)
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def running_nodes(self) -> list[str]:
        """The cluster's running nodes as this node sees them ([] if it does not answer)."""
        found = self.ctl("cluster_status", "--formatter", "json", timeout=20)
        if found.returncode != 0:
            return []
        try:
            return list(json.loads(found.stdout).get("running_nodes", []))
        except ValueError:
            return []

    def wait_serving(self, peers: list[RabbitNode], deadline: float = DEADLINE) -> None:
        """Wait until the node has booted, serves AMQP and the management API, and sees ``peers`` running."""
        # Polled with a connect, not the CLI: each CLI call starts an Erlang VM, which on two
        # cores would slow the boot it waits for.
        until(self._distributed, f"{self.name} distribution port {self.dist_port}", deadline, every=0.05)
        until(self._booted, f"{self.name} boot", deadline)
        until(self.serves_amqp, f"{self.name} AMQP listener on {self.amqp_port}", deadline)
        until(lambda: self.api("overview") is not None, f"{self.name} management API on {self.mgmt_port}", deadline)
        expected = {peer.name for peer in peers} | {self.name}
        until(lambda: expected <= set(self.running_nodes()), f"{self.name} in a cluster with {sorted(expected)}", deadline)

    # -- faults ---------------------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL this node's beam.smp (a machine dying) and wait for it to exit."""
        pids = self.stray_pids()
        if not pids:
            raise TopologyError(f"{self.name} is not running")
        kill_and_wait(pids, self.name)

    def peers(self) -> list[RabbitNode]:
        """The cluster's other nodes whose VM is alive and not suspended: those a rejoined node must see."""
        others = (RabbitNode(self.slot, i, self.base, self.cluster_size) for i in range(1, self.cluster_size + 1))
        return [node for node in others if node.index != self.index and alive(pid := node.pid()) and not stopped(pid)]

    def start(self, deadline: float = DEADLINE) -> None:
        """Boot the node again on its data directory; wait until it serves AMQP and the management
        API and sees every other live node of the cluster running.

        A node restarted while no other node runs waits (Mnesia) for the node that stopped last;
        to bring back a whole cluster, ``boot()`` every node first, then ``start()`` each.
        """
        if self.pid() is None:
            self.boot()
        self.wait_serving(self.peers(), deadline)

    def hang(self) -> None:
        """SIGSTOP the VM (a machine that stops answering without closing a connection); returns
        once the kernel shows it stopped (a signal reaches a multi-threaded process asynchronously)."""
        pid = self.pid()
        signal_pid(pid, signal.SIGSTOP, self.name)
        until(lambda: stopped(pid), f"{self.name} stopped by SIGSTOP", deadline=10, every=0.01)

    def resume(self) -> None:
        """SIGCONT the VM; returns once it runs again (it answers again shortly after)."""
        pid = self.pid()
        signal_pid(pid, signal.SIGCONT, self.name)
        until(lambda: not stopped(pid), f"{self.name} continued by SIGCONT", deadline=10, every=0.01)

    def stop_app(self) -> None:
        result = self.ctl("stop_app")
        if result.returncode != 0:
            raise TopologyError(f"{self.name} stop_app: {result.stderr.strip()}")

    def start_app(self, deadline: float = DEADLINE) -> None:
        result = self.ctl("start_app", timeout=deadline)
        if result.returncode != 0:
            raise TopologyError(f"{self.name} start_app: {result.stderr.strip()}")
        self.wait_serving(self.peers(), deadline)

    def queue(self, queue: str, vhost: str = "/") -> dict[str, Any] | None:
        path = f"queues/{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(queue, safe='')}"
        found = self.api(path)
        return found if isinstance(found, dict) else None

    def remove_files(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def available() -> bool:
    """True if the RabbitMQ server scripts this module runs are installed."""
    scripts = ("rabbitmq-server", "rabbitmqctl", "rabbitmq-diagnostics")
    return all((RABBIT_BIN / name).exists() for name in scripts) and os.path.isdir(RABBIT_HOME)
