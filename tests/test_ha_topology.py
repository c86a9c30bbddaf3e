"""The local HA topology (chaos/ha.py) does what the HA tests and the fault suite rely on.

One topology on slot 9 (slot 0 is for users and CI's own runs) boots once for this file: a 3-node
RabbitMQ cluster and a Postgres primary with a synchronous standby, all real servers. The tests
kill, hang and fail over real processes, and end by taking it down and checking that the machine's
default RabbitMQ and Postgres kept running untouched.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import ha_postgres, ha_rabbit, services
from chaos.ha import Topology
from chaos.ha_processes import alive, process_state, until

SLOT = 9
# A slot no test starts: only its state file is written.
STALE_SLOT = 4
UP_TIMINGS: dict[str, float] = {}
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(not ha_rabbit.available(), reason=f"RabbitMQ server scripts not installed in {ha_rabbit.RABBIT_BIN}"),
    pytest.mark.skipif(not ha_postgres.available(), reason=f"Postgres 15 binaries not installed in {ha_postgres.PG_BIN}"),
    pytest.mark.timeout(180),
]


def default_rabbit_pid() -> str | None:
    """OS pid of the machine's default node rabbit@localhost, asked of the node itself."""
    found = subprocess.run(["rabbitmqctl", "-n", "rabbit@localhost", "eval", "os:getpid()."],
                           capture_output=True, text=True, timeout=60, check=False)
    return found.stdout.strip().strip('"') if found.returncode == 0 else None


def default_postmaster_pid() -> str | None:
    """pid of the postmaster serving 127.0.0.1:5432, from postmaster.pid in the data directory it reports."""
    found = subprocess.run([str(ha_postgres.PG_BIN / "psql"), "-h", "127.0.0.1", "-p", "5432", "-U", "postgres", "-XAtc",
                            "SHOW data_directory"], capture_output=True, text=True, timeout=30, check=False)
    if found.returncode != 0:
        return None
    return (Path(found.stdout.strip()) / "postmaster.pid").read_text().split()[0]


@pytest.fixture(scope="module")
def defaults() -> dict[str, str | None]:
    """The default services' pids before the topology starts."""
    return {"rabbit@localhost": default_rabbit_pid(), "postgres 5432": default_postmaster_pid()}


@pytest.fixture(scope="module")
def topology(defaults: dict[str, str | None]) -> Iterator[Topology]:
    topo = Topology(slot=SLOT)
    started = time.monotonic()
    UP_TIMINGS.update(topo.up(synchronous=True), measured=time.monotonic() - started)
    print(f"\nHA topology slot {SLOT} up in {UP_TIMINGS['measured']:.1f} s: {UP_TIMINGS}", file=sys.stderr)
    yield topo
    topo.down()


def declare_quorum_queue(topo: Topology, node: int, name: str) -> None:
    services.management("PUT", f"/api/queues/%2F/{name}",
                        {"durable": True, "auto_delete": False, "arguments": {"x-queue-type": "quorum"}},
                        broker=services.Broker(topo.management_url(node)))


def primary_by_url(topo: Topology) -> str:
    """What libpq's multi-host URL reaches: 'f' if it is a primary (pg_is_in_recovery false)."""
    query = "SELECT pg_is_in_recovery(), current_setting('port')"
    found = subprocess.run([str(ha_postgres.PG_BIN / "psql"), topo.database_url, "-XAtc", query],
                           capture_output=True, text=True, timeout=30, check=True)
    return found.stdout.strip()


def test_up_takes_under_a_minute_and_forms_a_cluster_of_three_running_nodes(topology: Topology) -> None:
    assert UP_TIMINGS["measured"] < 60
    names = {node.name for node in topology.rabbit}
    assert names == {f"chronoq-ha{SLOT}-{i}@localhost" for i in (1, 2, 3)}
    for node in topology.rabbit:
        assert set(node.running_nodes()) == names, node.name
        assert node.running()


def test_every_node_serves_on_its_slot_ports_and_the_urls_list_them(topology: Topology) -> None:
    assert topology.amqp_urls == [f"amqp://guest:guest@127.0.0.1:{5700 + 10 * SLOT + i}/" for i in (1, 2, 3)]
    assert topology.amqp_url == ",".join(topology.amqp_urls)
    assert topology.database_url == (f"postgresql://postgres@127.0.0.1:{5800 + 10 * SLOT + 1},127.0.0.1:{5800 + 10 * SLOT + 2}"
                                     "/postgres?target_session_attrs=read-write")
    for node in topology.rabbit:
        assert node.serves_amqp()
        overview = node.api("overview")
        assert overview is not None and overview["node"] == node.name
        assert topology.management_url(node.index) == f"http://guest:guest@127.0.0.1:{15700 + 10 * SLOT + node.index}"
        plugins = node.ctl("eval", "rabbit_plugins:active().").stdout
        assert "rabbitmq_management" in plugins


def test_postgres_starts_as_primary_and_synchronous_standby(topology: Topology) -> None:
    primary, standby = topology.postgres
    assert (primary.role(), standby.role()) == ("primary", "standby")
    assert topology.primary() == primary and topology.standby() == standby
    assert primary.sync_state(standby) == "sync"
    assert primary.value("SHOW synchronous_commit") == "on"
    assert primary_by_url(topology) == f"f|{primary.port}"


def test_a_killed_node_starts_again_on_its_data_and_rejoins_the_cluster(topology: Topology) -> None:
    node, other = topology.rabbit[1], topology.rabbit[0]
    declare_quorum_queue(topology, 1, "ha-topology-kept")
    old_pid = node.pid()
    node.kill()
    assert node.pid() is None and old_pid is not None and not alive(old_pid)
    until(lambda: node.name not in other.running_nodes(), f"{other.name} seeing {node.name} down", deadline=30)
    node.start()
    assert node.pid() not in (None, old_pid)
    assert set(other.running_nodes()) == {n.name for n in topology.rabbit}
    assert node.queue("ha-topology-kept") is not None  # its own data came back, not a fresh node


def test_a_hung_node_stops_answering_until_resumed(topology: Topology) -> None:
    node = topology.rabbit[2]
    node.hang()
    try:
        assert process_state(node.pid() or 0) == "T"
        assert node.api("overview", timeout=2) is None
        assert not node.running()
        assert topology.status()["rabbit"][2]["hung"] is True
    finally:
        node.resume()
    until(lambda: node.api("overview") is not None, f"{node.name} answering after SIGCONT", deadline=30)
    assert node.running()


def test_stop_app_and_start_app_keep_the_vm(topology: Topology) -> None:
    node = topology.rabbit[0]
    pid = node.pid()
    node.stop_app()
    assert not node.running() and node.pid() == pid
    node.start_app()
    assert node.running() and node.serves_amqp()


def test_queue_leader_names_the_node_that_leads_a_quorum_queue(topology: Topology) -> None:
    declare_quorum_queue(topology, 3, "ha-topology-led")
    until(lambda: topology.queue_leader("ha-topology-led") is not None, "a leader for ha-topology-led", deadline=30)
    assert topology.queue_leader("ha-topology-led") in {node.name for node in topology.rabbit}
    assert topology.queue_leader("ha-topology-no-such-queue") is None


def test_two_failovers_swap_roles_and_keep_synchronously_committed_rows(topology: Topology) -> None:
    first, second = topology.postgres
    assert topology.primary() == first
    first.sql("CREATE TABLE kept (n int)", "INSERT INTO kept VALUES (1)")  # commit waits for the standby

    timings = topology.failover()
    print(f"\nfailover 1: {timings}", file=sys.stderr)
    assert set(timings) >= {"killed", "promoted", "writable", "standby_back"}
    assert timings["killed"] <= timings["promoted"] <= timings["writable"] <= timings["standby_back"]
    assert (first.role(), second.role()) == ("standby", "primary")
    assert second.value("SELECT array_agg(n ORDER BY n) FROM kept") == "{1}"
    assert second.sync_state(first) == "sync"
    assert primary_by_url(topology) == f"f|{second.port}"
    second.sql("INSERT INTO kept VALUES (2)")

    timings = topology.failover()
    print(f"failover 2: {timings}", file=sys.stderr)
    assert (first.role(), second.role()) == ("primary", "standby")
    assert first.value("SELECT array_agg(n ORDER BY n) FROM kept") == "{1,2}"
    assert first.sync_state(second) == "sync"


def test_synchronous_replication_can_be_switched_off_and_on(topology: Topology) -> None:
    primary, standby = topology.primary(), topology.standby()
    assert standby is not None
    topology.set_synchronous(False)
    assert primary.sync_state(standby) == "async"
    topology.set_synchronous(True)
    assert primary.sync_state(standby) == "sync"


def test_another_process_drives_the_same_topology_from_the_state_file(topology: Topology) -> None:
    command = [sys.executable, "-m", "chaos.ha"]
    status = subprocess.run([*command, "status", "--slot", str(SLOT)], capture_output=True, text=True,
                            cwd=ROOT, timeout=120, check=True)
    found = json.loads(status.stdout)
    assert [node["pid"] for node in found["rabbit"]] == [node.pid() for node in topology.rabbit]
    assert [node["role"] for node in found["postgres"]] == [node.role() for node in topology.postgres]
    assert all(node["running"] for node in found["rabbit"]) and found["synchronous"] is True
    env = subprocess.run([*command, "env", "--slot", str(SLOT)], capture_output=True, text=True, cwd=ROOT, timeout=60, check=True)
    assert f"export CHRONOQ_AMQP_URL={topology.amqp_url}" in env.stdout
    assert f"export CHRONOQ_DATABASE_URL='{topology.database_url}'" in env.stdout
    state = json.loads(topology.state_file.read_text())
    assert state["up"] is True and [n["port"] for n in state["postgres"]] == [n.port for n in topology.postgres]


def test_a_state_file_whose_servers_are_gone_is_not_up() -> None:
    """A run that ended without ``down`` leaves ``up: true`` behind; the next one must start over."""
    stale = Topology(slot=STALE_SLOT)
    if stale.base.exists():
        pytest.skip(f"{stale.base} is in use")
    stale.base.mkdir()
    try:
        stale._write_state(up=True)
        assert json.loads(stale.state_file.read_text())["up"] is True
        assert not stale.is_up()
    finally:
        shutil.rmtree(stale.base)


def test_down_stops_everything_it_started_and_leaves_the_default_services(
        topology: Topology, defaults: dict[str, str | None]) -> None:
    pids = [node.pid() for node in topology.rabbit] + [node.pid() for node in topology.postgres]
    assert all(pids)
    topology.down()
    assert not any(alive(pid) for pid in pids)
    assert not any(node.stray_pids() for node in [*topology.rabbit, *topology.postgres])
    assert not topology.base.exists()
    assert {"rabbit@localhost": default_rabbit_pid(), "postgres 5432": default_postmaster_pid()} == defaults


def test_the_command_line_starts_an_asynchronous_standby_and_takes_everything_down(topology: Topology) -> None:
    """``up --async-standby`` through the CLI, on the same slot (replacing whatever it still ran)."""
    command = [sys.executable, "-m", "chaos.ha"]
    up = subprocess.run([*command, "up", "--slot", str(SLOT), "--async-standby"], capture_output=True, text=True,
                        cwd=ROOT, timeout=120, check=True)
    assert re.search(r"slot 9 up in \d+\.\d s", up.stderr), up.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
    assert {key: shlex.split(value)[0] for key, value in exports.items()} == {
        "CHRONOQ_AMQP_URL": topology.amqp_url, "CHRONOQ_DATABASE_URL": topology.database_url}

    fresh = Topology(slot=SLOT)
    assert fresh.synchronous is False
    first, second = fresh.postgres
    assert (first.role(), second.role()) == ("primary", "standby")
    assert first.sync_state(second) == "async"
    first.sql("CREATE TABLE kept (n int)", "INSERT INTO kept VALUES (1)")
    until(lambda: second.value("SELECT count(*) FROM kept") == "1", "the row replayed on the standby", deadline=30)
    fresh.failover()
    assert (first.role(), second.role()) == ("standby", "primary")
    assert second.sync_state(first) == "async", "an asynchronous topology stays asynchronous after a failover"

    pids = [node.pid() for node in fresh.rabbit] + [node.pid() for node in fresh.postgres]
    subprocess.run([*command, "down", "--slot", str(SLOT)], capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    assert all(pids) and not any(alive(pid) for pid in pids)
    assert not fresh.base.exists()
