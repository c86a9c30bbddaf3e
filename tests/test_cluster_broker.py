"""chronoq on a RabbitMQ cluster: the ``amqp_url`` list, connections spread over the nodes and
moving to another node when theirs dies or hangs, confirms lost with a node, and quorum queues
declared with their replicas.

The cluster tests run on a real 3-node cluster of the local HA topology (``chaos/ha.py``, slot 8),
with the test's database on the default Postgres. Each test starts with every node running.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import pytest

from chaos import ha_postgres, ha_rabbit
from chaos.ha import Topology
from chaos.ha_processes import stopped
from chaos.ha_rabbit import RabbitNode
from chronoq import JobContext, Producer, Worker
from chronoq._broker.connection import connect
from chronoq._broker.publisher import ConfirmedPublisher, Outgoing
from chronoq._broker.topology import Topology as BrokerTopology
from chronoq._broker.topology import declare_queue
from chronoq._runtime.amqp_urls import check_urls, node_address
from chronoq._runtime.config import Settings
from chronoq.consumer.service import WorkerService
from chronoq.errors import ConfigError, ServiceUnavailableError
from chronoq.timer import Timer
from tests.conftest import _delete_broker_objects, child_env
from tests.harness import EFFECTS_TABLE, Process, all_finished, eventually, running
from tests.services import Services

SLOT = 8
#: A short heartbeat, so that a hung node is left within a test's time (about 3 x (2 + 1) s).
HEARTBEAT = "2"


# -- the amqp_url setting ------------------------------------------------------------------


def test_a_single_url_is_taken_as_it_is() -> None:
    assert Settings.load(amqp_url="amqp://guest:guest@rabbit:5672/").amqp_urls == ["amqp://guest:guest@rabbit:5672/"]


def test_a_list_of_urls_is_split_on_commas_and_spaces_and_empty_items_are_ignored() -> None:
    settings = Settings.load(amqp_url=" amqp://u:p@r1:5672/ ,amqps://u:p@r2/vh,, amqp://u:p@r3:5673/ ")
    assert settings.amqp_urls == ["amqp://u:p@r1:5672/", "amqps://u:p@r2/vh", "amqp://u:p@r3:5673/"]
    assert settings.amqp_url == "amqp://u:p@r1:5672/,amqps://u:p@r2/vh,amqp://u:p@r3:5673/"


@pytest.mark.parametrize(("value", "message"), [
    ("amqp://u:s3cret@r1/,http://u:s3cret@r2/", "URL 2 of 2: must start with amqp:// or amqps://"),
    ("u:s3cret@r1:5672", "must start with amqp:// or amqps://"),
    ("amqp://u:s3cret@r1/,amqp://u:s3cret@r2:99999/", "URL 2 of 2 (r2:?): the port is not a number from 0 to 65535"),
    ("amqp://u:s3cret@r1/,amqp://u:s3cret@:5672/,amqp://u:s3cret@r3/", "URL 2 of 3 (?:5672): names no host"),
    (f"amqp://u:s3cret@r1/,amqps://u:s3cret@{'h' * 64}.example/", "URL 2 of 2 (" + "h" * 64 + ".example:5671): the host"),
    (" , ", "must name at least one"),
])
def test_a_bad_url_is_named_by_its_place_and_host_never_by_its_password(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.load(amqp_url=value)
    assert f"CHRONOQ_AMQP_URL: {message}" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_node_is_named_by_host_and_port_with_the_scheme_s_port_by_default() -> None:
    assert node_address("amqp://u:s3cret@r1/") == "r1:5672"
    assert node_address("amqps://u:s3cret@r2/vh") == "r2:5671"
    assert node_address("amqp://u:s3cret@r3:5701/") == "r3:5701"
    assert check_urls("amqp://r1/") == "amqp://r1/"


def test_the_heartbeat_and_the_replicas_are_settings_with_bounds() -> None:
    settings = Settings.load()
    assert settings.amqp_heartbeat_seconds == 10 and settings.quorum_replicas == 3
    assert Settings.load(amqp_heartbeat="2.5s").amqp_heartbeat_seconds == 3  # AMQP counts whole seconds
    for bad in ({"amqp_heartbeat": "0s"}, {"quorum_replicas": 0}, {"quorum_replicas": 8}):
        with pytest.raises(ConfigError):
            Settings.load(**bad)


def test_quorum_queues_ask_for_their_replicas_and_a_balanced_leader_and_classic_ones_for_nothing() -> None:
    quorum = BrokerTopology("ns", "quorum", 10, 5)
    assert quorum.placement() == {"x-queue-type": "quorum", "x-quorum-initial-group-size": 5,
                                  "x-queue-leader-locator": "balanced"}
    assert quorum.queue_arguments("q").items() >= quorum.placement().items()
    assert BrokerTopology("ns", "classic", 10, 5).placement() == {"x-queue-type": "classic"}


async def test_a_connection_tries_every_node_before_the_broker_is_unavailable(settings: Settings) -> None:
    """Nodes that refuse are skipped at start-up; with none answering, the error names each."""
    closed = "amqp://guest:s3cret@127.0.0.1:1/"
    for _ in range(5):  # whichever node is tried first
        connection = await connect(f"{closed},{settings.amqp_url}", name="test-skip")
        try:
            assert connection.node == node_address(settings.amqp_url)
        finally:
            await connection.close()
    with pytest.raises(ServiceUnavailableError) as unavailable:
        await connect(f"{closed},amqp://guest:s3cret@127.0.0.1:2/", name="test-none")
    assert "127.0.0.1:1: " in str(unavailable.value) and "127.0.0.1:2: " in str(unavailable.value)
    assert "s3cret" not in str(unavailable.value)


async def test_a_node_that_accepts_the_connection_and_never_answers_is_left_for_the_next(settings: Settings) -> None:
    """A hung machine's kernel still accepts TCP: each attempt is bounded, then the next node is tried."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # held open, never written to

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    hung = f"amqp://guest:guest@127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        for _ in range(30):  # until the hung node was the one tried first (each try: 1 in 2)
            connection = await asyncio.wait_for(connect(f"{hung},{settings.amqp_url}", name="test-hung", timeout=0.5), 10)
            try:
                assert connection.node == node_address(settings.amqp_url)
            finally:
                await connection.close()
            if accepted:
                break
        assert accepted  # the hung node was tried, and left
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


# -- the cluster -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Topology]:
    """The 3-node cluster of slot 8, started for this module unless it is up already."""
    if not (ha_rabbit.available() and ha_postgres.available()):
        pytest.skip("the local HA topology needs the RabbitMQ server scripts and Postgres 15 binaries (chaos/ha.py)")
    topology = Topology(slot=SLOT)
    started = not topology.is_up()
    if started:
        topology.up()
    yield topology
    if started:
        topology.down()


@pytest.fixture
def cluster_settings(cluster: Topology, settings: Settings) -> Iterator[Settings]:
    """This test's settings on the cluster, every node running; its queues are deleted afterwards."""
    for node in cluster.rabbit:
        pid = node.pid()
        if pid is not None and stopped(pid):
            node.resume()
    for node in cluster.rabbit:
        if node.pid() is None:
            node.start()
    for node in cluster.rabbit:
        node.wait_serving([other for other in cluster.rabbit if other is not node])
    yield Settings.load(
        database_url=settings.database_url, amqp_url=cluster.amqp_url, namespace=settings.namespace,
        amqp_heartbeat=f"{HEARTBEAT}s", timer_max_idle="1s", shutdown_grace="10s",
    )
    for node in cluster.rabbit:
        if node.pid() is not None and not stopped(node.pid() or 0):
            _delete_broker_objects(Services("", node.amqp_url, node.management_url), settings.namespace)
            break


def _node(cluster: Topology, address: str) -> RabbitNode:
    return next(node for node in cluster.rabbit if address == f"127.0.0.1:{node.amqp_port}")


def _connection_events(log: Path) -> list[tuple[str, str]]:
    """(action, node) of each time a process's broker connection was opened, lost or restored."""
    events = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("action") in ("broker_connected", "broker_connection_lost", "broker_connection_restored"):
            events.append((entry["action"], entry["node"]))
    return events


async def _first(log: Path, action: str, *, timeout: float) -> str:
    """The node of the first ``action`` in the process's log, waited for."""
    async def logged() -> bool:
        return any(a == action for a, _ in _connection_events(log))

    await eventually(logged, timeout=timeout, what=f"{action} in {log.name}")
    return next(node for a, node in _connection_events(log) if a == action)


def _members(cluster: Topology, queue: str) -> tuple[list[str], str | None]:
    for node in cluster.rabbit:
        found = node.queue(queue)
        if found is not None and found.get("members"):
            return found["members"], found.get("leader")
    raise AssertionError(f"no node knows the members of {queue}")


async def test_connections_of_many_processes_spread_over_the_nodes(cluster: Topology, cluster_settings: Settings) -> None:
    """Each connection starts at a node chosen at random: 30 of them leave no node out (all on
    fewer nodes by chance: 3 x (2/3)^30, about 1 in 60 000)."""
    name = f"{cluster_settings.namespace}-spread"
    connections = [await connect(cluster_settings.amqp_url, name=name) for _ in range(30)]
    try:
        listed: list[dict] = []

        async def all_listed() -> bool:
            nonlocal listed
            listed = [c for c in cluster.rabbit[0].api("connections") or []
                      if c.get("client_properties", {}).get("connection_name") == name]
            return len(listed) == 30

        await eventually(all_listed, timeout=30, what="the 30 connections in the management API")
        per_node = Counter(c["node"] for c in listed)
        print(f"connections per node: {dict(per_node)}")
        assert set(per_node) == {node.name for node in cluster.rabbit}, per_node
        assert Counter(c.node for c in connections) == Counter(
            f"127.0.0.1:{_node_by_name(cluster, n).amqp_port}" for n in per_node.elements())
    finally:
        for connection in connections:
            await connection.close()


def _node_by_name(cluster: Topology, name: str) -> RabbitNode:
    return next(node for node in cluster.rabbit if node.name == name)


async def _worker_on_cluster(settings: Settings, tmp_path: Path) -> Process:
    # DEBUG: the log line naming the node a connection opened on (broker_connected).
    worker = Process(["worker", "tests.handlers:worker", "--queue", "effects", "--log-level", "DEBUG"],
                     child_env(settings, CHRONOQ_AMQP_HEARTBEAT=HEARTBEAT, CHRONOQ_CONCURRENCY="2"),
                     tmp_path / "worker.log")
    await worker.wait_for_log("worker_started")
    return worker


async def _effects_once(db, ids: list[int]) -> None:
    counts = dict(await db.fetch("SELECT job_id, count(*) FROM test_effects WHERE job_id = ANY($1) GROUP BY job_id", ids))
    assert counts == dict.fromkeys(ids, 1), counts


@pytest.mark.timeout(300)  # a hang lasts until the other nodes find the node down (net_ticktime)
@pytest.mark.parametrize("fault", ["kill", "hang"])
async def test_a_worker_whose_node_dies_or_hangs_moves_to_another_node_and_keeps_running_jobs(
    cluster: Topology, cluster_settings: Settings, producer: Producer, db, tmp_path: Path, fault: str,
) -> None:
    """SIGKILL closes the node's sockets: the worker sees it at once and is back on another node
    within a second or two. SIGSTOP leaves them open and silent: the worker leaves after about
    three missed heartbeats; it is back once the other nodes have found the hung one down (the
    Erlang distribution's net_ticktime, 60 s by default: until then a queue led by the hung node
    cannot be declared or consumed anywhere)."""
    await db.execute(EFFECTS_TABLE)
    worker = await _worker_on_cluster(cluster_settings, tmp_path)
    try:
        [(_, first_node)] = _connection_events(worker.log)
        victim = _node(cluster, first_node)
        async with running(Timer(cluster_settings)):
            before = await producer.enqueue("effects", {})
            await all_finished(producer, [before])
            faulted = time.monotonic()
            if fault == "kill":
                victim.kill()
            else:
                victim.hang()
            assert await _first(worker.log, "broker_connection_lost", timeout=30) == first_node
            left_after = time.monotonic() - faulted
            moved_to = await _first(worker.log, "broker_connection_restored", timeout=150)
            moved_after = time.monotonic() - faulted
            ids = [await producer.enqueue("effects", {"n": n}) for n in range(5)]
            summary = await all_finished(producer, ids, timeout=150)
            running_after = time.monotonic() - faulted
        print(f"{fault} of {victim.name}: the worker left {first_node} after {left_after:.1f} s, was back on "
              f"{moved_to} after {moved_after:.1f} s; jobs enqueued then ran {running_after:.1f} s after the fault")
        assert moved_to != first_node
        # Three heartbeats of silence (aiormq allows 3 x (heartbeat + 1) s), looked at every heartbeat / 2.
        assert left_after < (2 if fault == "kill" else 3 * (int(HEARTBEAT) + 1) + int(HEARTBEAT))
        if fault == "kill":
            assert moved_after < 10
        assert summary["succeeded"] == 5, summary
        await _effects_once(db, [before, *ids])
    finally:
        if fault == "hang":
            victim.resume()
            # Hung for longer than net_ticktime, the node comes back as a partition of its own
            # (cluster_status lists the others under partitions): restarting its application
            # makes it join the majority again.
            victim.stop_app()
            victim.start_app()
        worker.close()


async def test_publishes_whose_confirms_were_lost_with_the_node_are_failures(
    cluster: Topology, cluster_settings: Settings,
) -> None:
    """Messages sent to a node that then dies (hung first, so that none is confirmed) come back as
    failures, none as confirmed; the connection moves on and the same messages are published."""
    topology = BrokerTopology.for_settings(cluster_settings)
    connection = await connect(cluster_settings.amqp_url, name="test-confirms", heartbeat=int(HEARTBEAT))
    publisher = ConfirmedPublisher(connection, topology)
    restored = asyncio.Event()
    connection.reconnect_callbacks.add(lambda _connection: restored.set())
    try:
        await publisher.ensure_queues(["lost"])
        victim = _node(cluster, connection.node)
        messages = [Outgoing("lost", b"{}", f"m{n}") for n in range(50)]
        victim.hang()
        publishing = asyncio.create_task(publisher.publish(messages))

        async def in_flight() -> bool:
            channel = publisher._channel
            return channel is not None and len((await channel.get_underlay_channel()).confirmations) == 50

        await eventually(in_flight, timeout=10, what="50 publishes waiting for their confirms")
        victim.kill()
        failures = await asyncio.wait_for(publishing, 30)
        assert all(failure is not None for failure in failures), failures
        print(f"lost confirms reported as: {Counter(type(f).__name__ for f in failures)}")

        await asyncio.wait_for(restored.wait(), 30)  # channels, QoS and confirms restored
        assert connection.node != f"127.0.0.1:{victim.amqp_port}"
        assert await publisher.publish(messages) == [None] * 50
        assert await _message_count(connection, topology.queue_name("lost")) == 50
    finally:
        await publisher.close()
        await connection.close()


async def _message_count(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await channel.close()


async def test_a_timer_whose_node_dies_while_it_publishes_leaves_the_rows_due_and_publishes_them_through_another_node(
    cluster: Topology, cluster_settings: Settings, producer: Producer, db, caplog,
) -> None:
    caplog.set_level(logging.INFO, logger="chronoq.broker")
    await db.execute(EFFECTS_TABLE)
    worker = Worker()

    @worker.handler("effects")
    async def effects(ctx: JobContext, payload: dict) -> None:
        await ctx.db.execute("INSERT INTO test_effects (job_id, occurrence_key, attempt, pid) VALUES ($1, $2, $3, 0)",
                             ctx.job_id, ctx.idempotency_key, ctx.attempt)

    timer = Timer(cluster_settings)
    async with running(timer):
        declared = await producer.enqueue("effects", {"n": -1})  # the timer declares the queue for it

        async def dispatched() -> bool:
            return await db.fetchval("SELECT dispatches FROM chronoq.wheel WHERE job_id = $1", declared) == 1

        await eventually(dispatched, timeout=30, what="the first job dispatched")
        victim = _node(cluster, timer._broker.node)
        victim.hang()
        ids = [await producer.enqueue("effects", {"n": n}) for n in range(20)]

        async def publishing() -> bool:  # the batch holds its transaction open until the confirms
            return bool(await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'",
                f"{timer.name}-dispatch"))

        await eventually(publishing, timeout=30, what="the timer's batch waiting for confirms")
        victim.kill()
        async with running(WorkerService(worker, cluster_settings)):
            summary = await all_finished(producer, [declared, *ids], timeout=120)
    assert summary["succeeded"] == 21, summary
    await _effects_once(db, [declared, *ids])
    assert any(getattr(r, "action", None) == "publish_refused" for r in caplog.records)
    assert timer_moved(caplog, f"127.0.0.1:{victim.amqp_port}")


def timer_moved(caplog, left: str) -> bool:
    restored = [r for r in caplog.records if getattr(r, "action", None) == "broker_connection_restored"]
    return bool(restored) and all(r.node != left for r in restored)


# -- replicas ---------------------------------------------------------------------------------


@pytest.fixture
async def cluster_channel(cluster_settings: Settings) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await connect(cluster_settings.amqp_url, name="test-replicas")
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def test_queues_on_three_nodes_have_three_members_and_leaders_spread_over_the_nodes(
    cluster: Topology, cluster_settings: Settings, cluster_channel,
) -> None:
    topology = BrokerTopology.for_settings(cluster_settings)
    names = [f"spread{n}" for n in range(6)]
    for name in names:
        await declare_queue(cluster_channel, topology, name)
    leaders = []
    for name in names:
        members, leader = _members(cluster, topology.queue_name(name))
        assert sorted(members) == sorted(node.name for node in cluster.rabbit)
        leaders.append(leader)
    print(f"leaders of 6 new queues: {Counter(leaders)}")
    assert len(set(leaders)) >= 2, leaders


async def test_a_cluster_smaller_than_the_replicas_setting_gets_a_member_on_each_node(
    cluster: Topology, cluster_settings: Settings, cluster_channel,
) -> None:
    topology = BrokerTopology.for_settings(cluster_settings.model_copy(update={"quorum_replicas": 7}))
    await declare_queue(cluster_channel, topology, "wide")
    members, _ = _members(cluster, topology.queue_name("wide"))
    assert len(members) == 3
    one = BrokerTopology.for_settings(cluster_settings.model_copy(update={"quorum_replicas": 1}))
    await declare_queue(cluster_channel, one, "narrow")
    assert len(_members(cluster, one.queue_name("narrow"))[0]) == 1


async def test_a_queue_declared_without_replicas_by_an_earlier_version_is_used_as_it_is(
    cluster: Topology, cluster_settings: Settings, cluster_channel, producer: Producer,
) -> None:
    """RabbitMQ compares the placement arguments on a redeclaration: chronoq declares an
    existing queue with what it has (no PRECONDITION_FAILED) and the queue keeps its members."""
    ns = cluster_settings.namespace
    old = {"x-queue-type": "quorum", "x-dead-letter-exchange": f"{ns}.dead", "x-dead-letter-routing-key": "older",
           "x-delivery-limit": 40, "x-quorum-initial-group-size": 2}
    await cluster_channel.declare_queue(f"{ns}.q.older", durable=True, arguments=old)
    await cluster_channel.declare_queue(f"{ns}.dlq.older", durable=True, arguments={"x-queue-type": "quorum"})
    await cluster_channel.declare_queue(f"{ns}.submissions", durable=True, arguments={"x-queue-type": "quorum"})
    await _one_job_runs(cluster_settings, producer, "older")
    assert len(_members(cluster, f"{ns}.q.older")[0]) == 2


async def test_queues_on_a_single_node_get_one_member(settings: Settings, producer: Producer) -> None:
    """The default local RabbitMQ: the replicas setting (3) is capped at its one node."""
    await _one_job_runs(settings, producer, "alone")
    listed = await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "-q", "list_queues", "name", "members", "--formatter", "json"],
        capture_output=True, text=True, timeout=60,
    )
    if listed.returncode != 0:
        pytest.skip(f"rabbitmqctl cannot list the default node's queues: {listed.stderr.strip()[:200]}")
    members = {q["name"]: q["members"] for q in json.loads(listed.stdout)}
    if f"{settings.namespace}.q.alone" not in members:
        pytest.skip("the test broker (CHRONOQ_TEST_AMQP_URL) is not the machine's default node, which rabbitmqctl lists")
    assert members[f"{settings.namespace}.q.alone"] == ["rabbit@localhost"]


async def _one_job_runs(settings: Settings, producer: Producer, queue: str) -> None:
    """A job of ``queue`` runs through a timer and a worker with these settings."""
    worker = Worker()

    @worker.handler(queue)
    async def handle(ctx: JobContext, payload: dict) -> None:
        return None

    job_id = await producer.enqueue(queue, {})
    async with running(Timer(settings)), running(WorkerService(worker, settings)):
        await all_finished(producer, [job_id])
    assert (await producer.get(job_id)).state == "succeeded"
