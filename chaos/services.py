"""The real Postgres and RabbitMQ on this machine, for the nemesis: restart them, kill them, wait
until they serve again; and RabbitMQ's management API (queue depths, taking dead letters).

Everything here blocks; the harness calls it through ``asyncio.to_thread``. Each wait has a
deadline and looks at the condition itself (``pg_isready``, ``rabbitmqctl await_startup``, the
management API answering), never a fixed sleep.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chaos.ha_processes import command_line_of, environment_of

PG_CLUSTER = os.environ.get("CHAOS_PG_CLUSTER", "15 main").split()
#: The machine's own RabbitMQ node (``rabbit@<host>``), the one the local run restarts and kills.
DEFAULT_NODE = "rabbit@localhost"
MANAGEMENT_URL = os.environ.get("CHAOS_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
SERVICE_DEADLINE = 120.0


def _run(*args: str, timeout: float = SERVICE_DEADLINE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def _until(condition, what: str, deadline: float = SERVICE_DEADLINE, every: float = 0.2) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError(f"{what} not back after {deadline:.0f}s")
        time.sleep(every)


# -- Postgres -------------------------------------------------------------------------------

def postgres_ready() -> bool:
    return _run("pg_isready", "-h", "127.0.0.1", "-p", "5432", "-t", "2", timeout=10).returncode == 0


def restart_postgres() -> None:
    """Crash-stop (``-m immediate``: no checkpoint, clients cut) and start again."""
    _run("pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "stop", "-m", "immediate")
    ensure_postgres()


def ensure_postgres() -> None:
    if not postgres_ready():
        _run("pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "start")
        _until(postgres_ready, "Postgres")


# -- RabbitMQ -------------------------------------------------------------------------------

def broker_pids() -> list[int]:
    """The machine's own RabbitMQ node's Erlang VM: a ``beam.smp`` of user rabbitmq that was not
    started as another node (the HA topologies of chaos/ha.py run theirs under their own
    ``RABBITMQ_NODENAME`` and the same user) nor runs a CLI tool."""
    found = _run("pgrep", "-u", "rabbitmq", "-x", "beam.smp", timeout=10)
    return [pid for pid in map(int, found.stdout.split()) if _serves_default_node(pid)]


def _serves_default_node(pid: int) -> bool:
    """A RabbitMQ server VM (it boots the rabbit application; a CLI tool's VM does not) of the
    default node name."""
    return "rabbit boot" in " ".join(command_line_of(pid)) \
        and environment_of(pid).get("RABBITMQ_NODENAME", DEFAULT_NODE).startswith("rabbit@")


def restart_broker_gracefully() -> None:
    _run("rabbitmqctl", "stop_app")
    _run("rabbitmqctl", "start_app")
    ensure_broker()


def kill_broker() -> list[int]:
    """kill -9 of the broker's Erlang VM, then a fresh ``rabbitmq-server -detached``."""
    pids = broker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    _until(lambda: not broker_pids(), "the killed broker's exit", deadline=30, every=0.05)
    ensure_broker()
    return pids


def ensure_broker() -> None:
    """The broker runs (started if it is not), has booted, and its management API answers
    (enabled plugins are kept in /etc/rabbitmq/enabled_plugins, so it comes back by itself)."""
    if not broker_pids():
        _run("rabbitmq-server", "-detached", timeout=60)
    _until(lambda: _run("rabbitmqctl", "await_startup", "--timeout", "60", timeout=90).returncode == 0,
           "RabbitMQ", every=1.0)
    _until(_management_up, "the RabbitMQ management API", every=0.5)


def _management_up() -> bool:
    try:
        management("GET", "/api/overview")
        return True
    except (OSError, ValueError):
        return False


def local_ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return _run("rabbitmqctl", *args, timeout=60)


@dataclass(frozen=True)
class Broker:
    """How the harness reaches a broker: a management API and ``rabbitmqctl`` on each node it asks
    (the machine's own RabbitMQ by default; on a cluster, its running nodes)."""

    management_url: str = MANAGEMENT_URL
    ctls: tuple[Callable[..., subprocess.CompletedProcess[str]], ...] = (local_ctl,)


LOCAL = Broker()


def management(method: str, path: str, body: dict[str, Any] | None = None, broker: Broker = LOCAL,
               timeout: float = 10.0) -> Any:
    """Call the broker's management API; the decoded JSON answer (None for an empty one)."""
    parts = urllib.parse.urlsplit(broker.management_url)
    request = urllib.request.Request(f"{parts.scheme}://{parts.hostname}:{parts.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None)
    token = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data = response.read()
    return json.loads(data) if data else None


def queues(namespace: str, broker: Broker = LOCAL) -> list[dict[str, Any]]:
    """The namespace's queues with their depths (the management API's figures lag ~5 s)."""
    listing = management("GET", "/api/queues/%2F?columns=name,type,messages,messages_ready,messages_unacknowledged,consumers",
                         broker=broker)
    return [q for q in listing if q["name"].startswith(f"{namespace}.")]


def _eval_on_quorum_queue(queue: str, body: str, ctl: Callable[..., subprocess.CompletedProcess[str]] = local_ctl) -> str:
    """``rabbitmqctl eval`` with ``Member`` bound to the queue's Raft member on the node ``ctl``
    runs against."""
    erlang = (f"{{ok, Q}} = rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, <<\"{queue}\">>)),"
              f" {{RaName, _}} = amqqueue:get_pid(Q), Member = {{RaName, node()}}, {body}")
    done = ctl("eval", erlang)
    return (done.stdout + done.stderr).strip()[:300]


def quorum_queue_depth(queue: str, broker: Broker = LOCAL) -> int | None:
    """Messages in a quorum queue, ready or unacked, asked of its leader now (the management API
    and ``rabbitmqctl list_queues`` show figures the leader last published, every few seconds,
    and none at all for a queue that has not had a leader since the broker started). None if no
    leader answered within 5 s. On a cluster each node is asked in turn until one answers (a
    member that is not the leader forwards the query to it)."""
    for ctl in broker.ctls:
        answer = _eval_on_quorum_queue(queue, "case ra:leader_query(Member, fun rabbit_fifo:query_messages_total/1,"
                                              " 5000) of {ok, {_, Total}, _} -> Total; Other -> Other end.", ctl)
        if answer.isdigit():
            return int(answer)
    return None


def quorum_status(queue: str, broker: Broker = LOCAL) -> Any:
    """The Raft state of each member of a quorum queue, for the report."""
    if broker is LOCAL:
        done = _run("rabbitmq-queues", "quorum_status", queue, "--formatter", "json", timeout=60)
    else:
        done = broker.ctls[0]("eval", f"rabbit_quorum_queue:status(<<\"/\">>, <<\"{queue}\">>).")
    try:
        return json.loads(done.stdout)
    except ValueError:
        return (done.stderr or done.stdout).strip()[:300]


def stop_quorum_queue(queue: str, broker: Broker = LOCAL) -> str:
    """Stop the queue's member on the (first) node: the state RabbitMQ can leave a quorum queue
    in after a restart (no leader, no figures), for testing the checker's repair."""
    return _eval_on_quorum_queue(queue, "ra:stop_server(quorum_queues, Member).", broker.ctls[0])


def restart_quorum_queue(queue: str, broker: Broker = LOCAL) -> str:
    """What an operator does for a quorum queue left without a leader after a broker restart (a
    RabbitMQ issue, see chaos/README.md): restart its member on each node if it is not running,
    and ask it to stand for election. Returns what each call answered."""
    answers = [_eval_on_quorum_queue(queue, "{rabbit_quorum_queue:restart_server(Member), ra:trigger_election(Member)}.",
                                     ctl) for ctl in broker.ctls]
    return " | ".join(answers)


def broker_state(broker: Broker = LOCAL) -> dict[str, Any]:
    """What a stuck run needs to be explained: resource alarms (they block publishers), each
    client connection's state (``blocked`` under an alarm) and each channel's consumers and
    unacknowledged deliveries (a live consumer that stopped settling holds its prefetch)."""
    nodes = management("GET", "/api/nodes?columns=name,running,mem_alarm,disk_free_alarm,disk_free,disk_free_limit",
                       broker=broker)
    connections = management("GET", "/api/connections?columns=client_properties.connection_name,state,node", broker=broker)
    channels = management("GET", "/api/channels?columns=name,consumer_count,messages_unacknowledged,prefetch_count",
                          broker=broker)
    return {
        "nodes": nodes,
        "connections": [{"name": (c.get("client_properties") or {}).get("connection_name"), "state": c.get("state"),
                         "node": c.get("node")} for c in connections],
        "channels": channels,
    }


def take_messages(queue: str, limit: int = 10_000, broker: Broker = LOCAL) -> list[dict[str, Any]]:
    """Take (ack) up to ``limit`` messages off a queue; their properties, payloads cut short."""
    taken: list[dict[str, Any]] = []
    quoted = urllib.parse.quote(queue, safe="")
    while len(taken) < limit:
        batch = management("POST", f"/api/queues/%2F/{quoted}/get",
                           {"count": 500, "ackmode": "ack_requeue_false", "encoding": "auto", "truncate": 200}, broker)
        if not batch:
            break
        taken += batch
    return taken


def delete_namespace(namespace: str, broker: Broker = LOCAL) -> None:
    """Delete the run's queues and exchanges (after the check)."""
    for kind in ("queues", "exchanges"):
        try:
            items = management("GET", f"/api/{kind}/%2F?columns=name", broker=broker)
        except (OSError, ValueError):
            return
        for item in items:
            if item["name"].startswith(f"{namespace}."):
                with contextlib.suppress(OSError, urllib.error.HTTPError):
                    management("DELETE", f"/api/{kind}/%2F/{urllib.parse.quote(item['name'], safe='')}", broker=broker)
