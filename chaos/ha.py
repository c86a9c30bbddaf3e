"""A local HA topology without Docker: a 3-node RabbitMQ 3.10 cluster and a Postgres 15 primary with a
streaming standby (synchronous unless asked otherwise), for the HA tests, the fault suite and users
who want to try chronoq against the engines it runs on in production.

```
python -m chaos.ha up [--slot K] [--async-standby]   # starts; prints the export lines
python -m chaos.ha down [--slot K]                   # stops what it started, removes its files
python -m chaos.ha env [--slot K]                    # prints the export lines again
python -m chaos.ha status [--slot K]                 # JSON: nodes, pids, roles
```

Slots keep topologies apart: slot K uses ports 5700+10K+i (AMQP), 25700+10K+i (Erlang
distribution), 15700+10K+i (management) for RabbitMQ node i, 5800+10K+i for Postgres node i, and
the directory /tmp/chronoq-ha<K>/. The machine's default Postgres (5432) and RabbitMQ
(rabbit@localhost) are never touched: nothing here stops a process it did not start.

``up`` writes the state file /tmp/chronoq-ha<K>/topology.json (ports, directories, whether the
standby is synchronous; pids and roles as of the last ``up`` or ``failover``). Everything a later
process needs is derived from the slot and that file, and every live fact (pids, roles) is read
again from the servers' pid files and the servers themselves, so any process may build
``Topology(slot=K)`` and drive the same nodes.

Needs root (servers run as the ``rabbitmq`` and ``postgres`` users) and the Debian packages of
RabbitMQ 3.10 and Postgres 15. A newcomer's two commands:

```
eval "$(python -m chaos.ha up)"     # about 15-20 s on 2 cores
chronoq demo
```
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos import ha_postgres, ha_rabbit
from chaos.ha_postgres import PgNode
from chaos.ha_processes import TopologyError, kill_and_wait, stopped, until
from chaos.ha_rabbit import RabbitNode

__all__ = ["PgNode", "RabbitNode", "Topology", "TopologyError"]

RABBIT_NODES = 3
PG_NODES = 2
# '*' names any connected standby: with one standby, every commit waits for it.
SYNCHRONOUS_NAMES = "*"
#: A node that exits while booting (the error carries the end of its output) makes ``up`` start
#: the slot over, once, before it gives up.
UP_ATTEMPTS = 2


def _say(message: str) -> None:
    print(f"chaos.ha: {message}", file=sys.stderr, flush=True)


class Topology:
    """The nodes of slot ``slot``; reads the state file written by ``up`` if there is one."""

    def __init__(self, slot: int = 0) -> None:
        if not 0 <= slot <= 9:
            raise ValueError("slot must be 0-9 (ports are 10 apart per slot)")
        self.slot = slot
        self.base = Path(f"/tmp/chronoq-ha{slot}")
        self.state_file = self.base / "topology.json"
        self.rabbit = [RabbitNode(slot, i, self.base, RABBIT_NODES) for i in range(1, RABBIT_NODES + 1)]
        self.postgres = [PgNode(slot, i, self.base) for i in range(1, PG_NODES + 1)]
        state = self._read_state()
        self.synchronous: bool = bool(state.get("synchronous", True))

    # -- addresses ------------------------------------------------------------------------

    @property
    def amqp_urls(self) -> list[str]:
        return [node.amqp_url for node in self.rabbit]

    @property
    def amqp_url(self) -> str:
        return ",".join(self.amqp_urls)

    @property
    def database_url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.postgres)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def management_url(self, i: int) -> str:
        """Management API base URL of RabbitMQ node ``i`` (1-3)."""
        return self.rabbit[i - 1].management_url

    def env(self) -> str:
        """Shell lines that point chronoq at this topology."""
        return (f"export CHRONOQ_AMQP_URL={shlex.quote(self.amqp_url)}\n"
                f"export CHRONOQ_DATABASE_URL={shlex.quote(self.database_url)}\n")

    # -- state file -----------------------------------------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_file.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def is_up(self) -> bool:
        """True if ``up`` finished and every server it started still runs (a suspended one counts).

        A state file left by a process that ended without ``down`` names servers that may be gone;
        a slot like that is not up, and the next ``up`` starts it over.
        """
        if self._read_state().get("up") is not True:
            return False
        return all(node.pid() is not None for node in self.rabbit) and all(node.pid() is not None for node in self.postgres)

    def _write_state(self, up: bool) -> None:
        state = {
            "slot": self.slot,
            "up": up,
            "synchronous": self.synchronous,
            "amqp_url": self.amqp_url,
            "database_url": self.database_url,
            "rabbit": [{"index": n.index, "name": n.name, "amqp_port": n.amqp_port, "dist_port": n.dist_port,
                        "mgmt_port": n.mgmt_port, "dir": str(n.dir), "pid": n.pid()} for n in self.rabbit],
            "postgres": [{"index": n.index, "port": n.port, "data_dir": str(n.data_dir), "pid": n.pid(), "role": n.role()}
                         for n in self.postgres],
        }
        partial = self.state_file.with_suffix(".tmp")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.replace(self.state_file)

    # -- up and down ----------------------------------------------------------------------

    def up(self, synchronous: bool = True) -> dict[str, float]:
        """Start everything (replacing whatever this slot still ran) and wait until it serves.

        Returns the seconds each part took; they are also printed to stderr.
        """
        if os.geteuid() != 0:
            raise TopologyError("needs root: the servers run as the rabbitmq and postgres users")
        if not ha_rabbit.available():
            raise TopologyError(f"RabbitMQ server scripts not found in {ha_rabbit.RABBIT_BIN}")
        if not ha_postgres.available():
            raise TopologyError(f"Postgres 15 binaries not found in {ha_postgres.PG_BIN}")
        started = time.monotonic()
        self.synchronous = synchronous
        timings: dict[str, float] = {}
        for attempt in range(1, UP_ATTEMPTS + 1):
            self.down(quiet=True)
            self.base.mkdir(parents=True)
            self.base.chmod(0o755)
            self._write_state(up=False)
            try:
                _in_parallel({"rabbitmq": lambda: self._up_rabbit(timings, started),
                              "postgres": lambda: self._up_postgres(timings, started)})
                break
            except TopologyError as exc:
                if attempt == UP_ATTEMPTS:
                    self._stop_processes()  # the logs stay in the slot's directory for the error's reader
                    raise
                _say(f"slot {self.slot}: a node failed to boot, starting over: {exc}")
            except BaseException:
                self._stop_processes()
                raise
        timings["total"] = time.monotonic() - started
        self._write_state(up=True)
        mode = "synchronous" if synchronous else "asynchronous"
        _say(f"slot {self.slot} up in {timings['total']:.1f} s (RabbitMQ cluster of {RABBIT_NODES} "
             f"{timings['rabbitmq']:.1f} s, Postgres primary + {mode} standby {timings['postgres']:.1f} s)")
        return timings

    def _up_rabbit(self, timings: dict[str, float], started: float) -> None:
        for node in self.rabbit:
            node.prepare()
        first, rest = self.rabbit[0], self.rabbit[1:]
        first.boot()
        first.wait_serving([])
        timings["rabbitmq_first_node"] = time.monotonic() - started
        # Nodes 2 and 3 discover node 1 (classic_config) and join it on their first boot.
        for node in rest:
            node.boot()
        for node in rest:
            node.wait_serving([first])
        until(lambda: {n.name for n in self.rabbit} <= set(first.running_nodes()), f"a cluster of {RABBIT_NODES} running nodes")
        timings["rabbitmq"] = time.monotonic() - started

    def _up_postgres(self, timings: dict[str, float], started: float) -> None:
        primary, standby = self.postgres
        primary.init_primary()
        primary.start()
        timings["postgres_primary"] = time.monotonic() - started
        standby.rebuild_as_standby(of=primary)
        if self.synchronous:
            self._synchronous_on(primary, standby)
        timings["postgres"] = time.monotonic() - started

    def down(self, quiet: bool = False) -> None:
        """SIGKILL every process this slot started and remove its directory (nothing in it is kept:
        the data is throw-away)."""
        stopped_count = self._stop_processes()
        if self.base.exists():
            shutil.rmtree(self.base)
        if not quiet:
            _say(f"slot {self.slot} down ({stopped_count} processes stopped)")

    def _stop_processes(self) -> int:
        """SIGKILL this slot's servers, each found by pid and checked to be ours; returns how many."""
        pids = [pid for node in self.rabbit for pid in node.stray_pids()]
        pids += [pid for node in self.postgres for pid in node.stray_pids()]
        if pids:
            kill_and_wait(pids, f"slot {self.slot}'s servers")
        return len(pids)

    # -- RabbitMQ -------------------------------------------------------------------------

    def queue_leader(self, queue: str) -> str | None:
        """Erlang node name leading a quorum queue (vhost /), asked of the first node that answers."""
        for node in self.rabbit:
            if node.pid() is None or stopped(node.pid()):
                continue
            found = node.queue(queue)
            if found is not None:
                leader = found.get("leader") or found.get("node")
                return str(leader) if leader else None
        return None

    # -- Postgres -------------------------------------------------------------------------

    def primary(self) -> PgNode:
        for node in self.postgres:
            if node.role() == "primary":
                return node
        raise TopologyError(f"slot {self.slot} has no Postgres primary")

    def standby(self) -> PgNode | None:
        return next((node for node in self.postgres if node.role() == "standby"), None)

    def set_synchronous(self, on: bool) -> None:
        """Make commits on the current primary wait for the standby (on) or not (off), and reload."""
        primary = self.primary()
        if on:
            self._synchronous_on(primary, self.standby())
        else:
            primary.set_synchronous_standby_names("")

    def _synchronous_on(self, primary: PgNode, standby: PgNode | None) -> None:
        primary.set_synchronous_standby_names(SYNCHRONOUS_NAMES)
        if standby is not None:
            until(lambda: primary.sync_state(standby) == "sync", f"{standby.cluster_name} as a synchronous standby")

    def failover(self) -> dict[str, float]:
        """The primary's machine dies and the standby takes over; the old primary comes back as the new standby.

        Synchronous replication is off while the new primary is alone (so it can commit, as
        Patroni's non-strict synchronous mode does) and on again once its standby streams, unless
        the topology is asynchronous. Returns seconds since the start: killed, promoted, writable,
        standby_back.
        """
        started = time.monotonic()
        old, new = self.primary(), self.standby()
        if new is None:
            raise TopologyError(f"slot {self.slot} has no standby to fail over to")
        old.kill()
        timings = {"killed": time.monotonic() - started}
        new.promote()
        timings["promoted"] = time.monotonic() - started
        new.set_synchronous_standby_names("")
        timings["writable"] = time.monotonic() - started
        old.rebuild_as_standby(of=new)
        if self.synchronous:
            self._synchronous_on(new, old)
        timings["standby_back"] = time.monotonic() - started
        self._write_state(up=True)
        return timings

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Live facts: every node's pid and state, Postgres roles, the URLs."""
        return {
            "slot": self.slot,
            "up": self.is_up(),
            "synchronous": self.synchronous,
            "amqp_url": self.amqp_url,
            "database_url": self.database_url,
            "rabbit": [{"index": n.index, "name": n.name, "amqp_port": n.amqp_port, "mgmt_port": n.mgmt_port,
                        "pid": n.pid(), "hung": stopped(n.pid()), "running": n.running()} for n in self.rabbit],
            "postgres": [{"index": n.index, "port": n.port, "data_dir": str(n.data_dir), "pid": n.pid(), "role": n.role()}
                         for n in self.postgres],
        }


def _in_parallel(parts: dict[str, Callable[[], None]]) -> None:
    """Run each part in its own thread; re-raise the first failure after all have finished."""
    failures: list[BaseException] = []

    def guarded(part: Callable[[], None]) -> None:
        try:
            part()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=guarded, args=(part,), name=name) for name, part in parts.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.ha", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "env", "status"])
    parser.add_argument("--slot", type=int, default=0, help="0-9; each slot has its own ports and directory (default 0)")
    parser.add_argument("--async-standby", action="store_true", help="up: the standby replicates asynchronously")
    args = parser.parse_args(argv)
    topology = Topology(slot=args.slot)
    try:
        if args.command == "up":
            topology.up(synchronous=not args.async_standby)
            print(topology.env(), end="")
        elif args.command == "down":
            topology.down()
        elif args.command == "env":
            if not topology.is_up():
                _say(f"slot {args.slot} is not up (python -m chaos.ha up --slot {args.slot})")
                return 1
            print(topology.env(), end="")
        else:
            print(json.dumps(topology.status(), indent=2))
    except TopologyError as exc:
        _say(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
