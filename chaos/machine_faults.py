"""Engine faults on the HA topology (chaos/ha.py): machines dying, hanging and failing over.

- ``node_kill``: kill -9 of a RabbitMQ node (the one leading the run's job queue, the one most
  client connections are attached to, or any: a seeded choice); it boots again 2-10 s later,
  while other faults go on.
- ``node_hang``: SIGSTOP of a RabbitMQ node for longer than three AMQP heartbeats (clients give a
  silent node up after about three), then SIGCONT.
- ``broker_restart``: ``stop_app`` / ``start_app`` of one RabbitMQ node.
- ``postgres_failover``: kill -9 of the primary, promotion of the standby, the old primary
  rebuilt as the new standby (``Topology.failover``).
- ``postgres_restart``: kill -9 of the primary and a restart in place (crash recovery).

At most one RabbitMQ node is down or hung at any moment (a majority of 3 must stay): a node fault
waits until the previous node serves again. Likewise one Postgres fault at a time, so that a
failover never meets a rebuild in progress. A node kill's and a hang's recovery, and a failover,
run in the background while the nemesis goes on; ``settle`` waits for them.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

from chaos import services
from chaos.ha import PgNode, RabbitNode, Topology, TopologyError
from chaos.ha_processes import kill_and_wait
from chaos.nemesis import KINDS
from chronoq._runtime.config import DEFAULT_AMQP_HEARTBEAT

#: One round: the existing kinds once each (``broker_kill`` is replaced by the node kinds) and
#: the machine deaths several times, so that a 10-minute run has 30+ node kills and hangs.
ROUND = (*(kind for kind in KINDS if kind != "broker_kill"), *["node_kill"] * 5, "node_hang", "postgres_failover")
NODE_DOWN_S = (2.0, 10.0)
#: Clients give a silent node up after about this many heartbeats (chronoq._runtime.config)...
HEARTBEATS_TO_GIVE_UP = 3
#: ... and a hang lasts this much longer.
HANG_PAST_HEARTBEATS_S = (2.0, 8.0)
KILL_TARGETS = ("queue_leader", "connections", "random")


class MachineFaults:
    """The HA topology's faults; ``job_queue`` is the run's quorum queue whose leader a kill may
    aim at."""

    round = ROUND

    def __init__(self, topology: Topology, rng: random.Random, job_queue: str) -> None:
        self.topology, self.rng, self.job_queue = topology, rng, job_queue
        self._rabbit_lane = asyncio.Lock()  # held while a node is down, hung or restarting
        self._postgres_lane = asyncio.Lock()  # held while a failover or a restart runs
        self._recoveries: set[asyncio.Task[None]] = set()

    def _lane(self, kind: str) -> asyncio.Lock:
        return self._postgres_lane if kind.startswith("postgres") else self._rabbit_lane

    def ready(self, kind: str) -> bool:
        return not self._lane(kind).locked()

    async def perform(self, kind: str, entry: dict) -> None:
        lane = self._lane(kind)
        asked = time.time()
        await lane.acquire()
        entry["t"] = round(time.time(), 3)  # when it strikes, after waiting for the lane
        entry["waited_s"] = round(entry["t"] - asked, 3)
        try:
            recovery = await getattr(self, kind)(entry)
        except TopologyError as exc:  # recorded in the history; heal brings everything back
            entry["error"] = str(exc)[:300]
            recovery = None
        except BaseException:
            lane.release()
            raise
        if recovery is None:
            lane.release()
            return
        task = asyncio.create_task(self._recover(recovery, lane, entry), name=f"recover-{kind}")
        self._recoveries.add(task)
        task.add_done_callback(self._recoveries.discard)

    async def _recover(self, recovery, lane: asyncio.Lock, entry: dict) -> None:
        try:
            await recovery
        except Exception as exc:  # recorded; heal brings everything back whatever happened
            entry["recovery_error"] = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            entry["recovered"] = round(time.time(), 3)
            lane.release()

    async def settle(self) -> None:
        while self._recoveries:
            await asyncio.gather(*list(self._recoveries), return_exceptions=True)

    # -- RabbitMQ -----------------------------------------------------------------------------

    def _node(self, name: str | None) -> RabbitNode | None:
        return next((node for node in self.topology.rabbit if node.name == name), None)

    def _busiest_node(self) -> str | None:
        """The node most client connections are attached to (management API of node 1, any node
        if it does not answer)."""
        for node in self.topology.rabbit:
            broker = services.Broker(node.management_url, (node.ctl,))
            try:
                connections = services.management("GET", "/api/connections?columns=node", broker=broker)
            except OSError:
                continue
            counts = Counter(c.get("node") for c in connections)
            return counts.most_common(1)[0][0] if counts else None
        return None

    async def _target(self) -> tuple[RabbitNode, str]:
        aim = self.rng.choice(KILL_TARGETS)
        fallback = self.rng.choice(self.topology.rabbit)
        if aim == "queue_leader":
            node = self._node(await asyncio.to_thread(self.topology.queue_leader, self.job_queue))
        elif aim == "connections":
            node = self._node(await asyncio.to_thread(self._busiest_node))
        else:
            node = fallback
        return (node, aim) if node is not None else (fallback, "random")

    async def node_kill(self, entry: dict):
        node, aim = await self._target()
        down_s = self.rng.uniform(*NODE_DOWN_S)
        entry.update(target=node.name, aim=aim, pid=node.pid())
        entry["t"] = round(time.time(), 3)
        await asyncio.to_thread(node.kill)
        entry["killed"] = round(time.time(), 3)
        return self._boot_later(node, down_s, entry)

    async def _boot_later(self, node: RabbitNode, down_s: float, entry: dict) -> None:
        await asyncio.sleep(down_s)
        entry["booted"] = round(time.time(), 3)
        await asyncio.to_thread(node.start)

    async def node_hang(self, entry: dict):
        node = self.rng.choice(self.topology.rabbit)
        seconds = HEARTBEATS_TO_GIVE_UP * DEFAULT_AMQP_HEARTBEAT.total_seconds() + self.rng.uniform(*HANG_PAST_HEARTBEATS_S)
        entry.update(target=node.name, pid=node.pid(), seconds=round(seconds, 1))
        entry["t"] = round(time.time(), 3)
        await asyncio.to_thread(node.hang)
        return self._resume_later(node, seconds, entry)

    async def _resume_later(self, node: RabbitNode, seconds: float, entry: dict) -> None:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(node.resume)
        entry["resumed"] = round(time.time(), 3)

    async def broker_restart(self, entry: dict) -> None:
        node = self.rng.choice(self.topology.rabbit)
        entry["target"] = f"{node.name} (stop_app/start_app)"
        await asyncio.to_thread(node.stop_app)
        await asyncio.to_thread(node.start_app)

    # -- Postgres -----------------------------------------------------------------------------

    async def postgres_failover(self, entry: dict):
        primary = await asyncio.to_thread(self.topology.primary)
        entry["target"] = f"postgres primary :{primary.port}"
        return self._fail_over(entry)

    async def _fail_over(self, entry: dict) -> None:
        started = time.time()
        timings = await asyncio.to_thread(self.topology.failover)
        entry["failover_s"] = {k: round(v, 2) for k, v in timings.items()}
        entry["promoted"] = round(started + timings.get("promoted", 0.0), 3)

    async def postgres_restart(self, entry: dict) -> None:
        primary = await asyncio.to_thread(self.topology.primary)
        entry["target"] = f"postgres primary :{primary.port} (kill -9, restart in place)"
        await asyncio.to_thread(restart_in_place, primary)


def restart_in_place(node: PgNode) -> None:
    """kill -9 of the server and a start on the same data directory (crash recovery), as after a
    reboot. A backend forked while ``PgNode.kill`` listed the postmaster's children outlives it:
    such leftovers are killed too. The killed postmaster can stay a zombie until its parent (not
    us) reaps it, and Postgres then takes the lock files' pid for a live server: once none of the
    node's processes runs, the stale lock files go."""
    node.kill()
    leftovers = node.stray_pids()
    if leftovers:
        kill_and_wait(leftovers, f"{node.cluster_name}'s leftover backends")
    for lock in (node.data_dir / "postmaster.pid", node.dir / f".s.PGSQL.{node.port}.lock"):
        lock.unlink(missing_ok=True)
    node.start()
