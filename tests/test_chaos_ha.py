"""The fault-injection suite's short run on the HA topology (chaos/README.md): a 3-node RabbitMQ
cluster and a Postgres primary with a synchronous standby of their own (slot 6), RabbitMQ nodes
killed and hung, the primary failed over, mixed with the process and proxy faults, judged by the
checker. A random seed, printed for replay. It must leave the machine's own Postgres and
RabbitMQ exactly as it found them and take its topology down."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from chaos import services
from chaos.ha import Topology
from chaos.machine_faults import ROUND

ROOT = Path(__file__).resolve().parents[1]
SLOT = 6
#: The first line of the socket lock file of the machine's own Postgres is its postmaster's pid.
LOCAL_POSTGRES_LOCK = Path("/var/run/postgresql/.s.PGSQL.5432.lock")
SHOWN_COUNTEREXAMPLES = 4


def local_engines() -> dict[str, object]:
    """Who serves the machine's own Postgres and RabbitMQ: restarting either changes it."""
    postmaster = LOCAL_POSTGRES_LOCK.read_text().split()[0] if LOCAL_POSTGRES_LOCK.exists() else None
    return {"postgres_5432_postmaster": postmaster, "rabbit@localhost_beam": sorted(services.broker_pids())}


def diagnosis(report: dict) -> str:
    shown = {name: {"count": v["count"], "first": v["counterexamples"][:SHOWN_COUNTEREXAMPLES]}
             for name, v in report["invariants"].items() if not v["ok"]}
    return json.dumps({"replay": report["run"]["replay"], "violations": shown, "faults": report["figures"]["faults"],
                       "deaths": report["figures"]["deaths"], "drain": report["run"].get("drain"),
                       "logs": report["run"]["logs"]}, indent=1, default=str)


@pytest.mark.timeout(900)
def test_a_random_seed_on_the_ha_topology_with_machine_deaths_is_valid_and_leaves_the_local_engines_alone() -> None:
    seed = random.randrange(1_000_000)
    args = ["--ha", "--slot", str(SLOT), "--seed", str(seed), "--duration", "60", "--jobs", "600"]
    print(f"chaos HA seed {seed}: replay with python -m chaos.run {' '.join(args)}")
    before = local_engines()
    try:
        result = subprocess.run([sys.executable, "-m", "chaos.run", *args], cwd=ROOT, capture_output=True, text=True,
                                timeout=840, check=False)
    finally:
        Topology(slot=SLOT).down(quiet=True)  # whatever happened: nothing of slot 6 stays behind
    print(result.stderr[-3000:])
    assert result.returncode in (0, 1) and result.stdout.lstrip().startswith("{"), \
        f"harness failed ({result.returncode}):\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout)

    assert report["valid"], diagnosis(report)
    faults = report["figures"]["faults"]
    assert set(faults) == set(ROUND), f"faults injected: {faults}"  # node kills, a hang, a failover and the rest
    assert report["replication"]["standby"] == "synchronous"
    assert report["replication"]["enqueues_lost"]["count"] == 0
    assert all(kind in report["availability"]["per_kind"] for kind in ("node_kill", "node_hang", "postgres_failover"))
    assert local_engines() == before
    topology = Topology(slot=SLOT)
    assert not topology.is_up() and not topology.base.exists()
    assert not [pid for node in (*topology.rabbit, *topology.postgres) for pid in node.stray_pids()]
