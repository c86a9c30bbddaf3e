"""The price of synchronous replication: the same Postgres primary (a local HA topology, slot 3)
with its standby synchronous, and alone (the standby stopped), alternately, three rounds; each
round a 20,000-job no-op burst and 10 s at 200 jobs/s. RabbitMQ is the machine's single node for
both, so only Postgres differs. Run from a chronoq checkout (chaos/ on the path) as root, after
`python -m chaos.ha up --slot 3`; writes campaign.log and JSON under OUTDIR.

    python replication.py OUTDIR CHRONOQ_BINARY
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from chaos.ha import PgNode, Topology
from chaos.ha_processes import until

OUT = Path(sys.argv[1])
CHRONOQ = sys.argv[2]
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
ROUNDS = 3


def log(line: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / "campaign.log").open("a") as f:
        f.write(f"== {time.strftime('%H:%M:%S')} {line}\n")
    print(line, flush=True)


def bench(variant: str, url: str, *args: str) -> None:
    result = subprocess.run([CHRONOQ, "bench", *args, "--runs", "1", "--handler", "noop", "--database-url", url,
                             "--amqp-url", AMQP, "--out", str(OUT / f"{variant}-{args[0]}")],
                            capture_output=True, text=True, timeout=600)
    rows = [line for line in result.stdout.splitlines() if line.startswith(("│ 1 ", "│ postgres", "│ total"))]
    with (OUT / "campaign.log").open("a") as f:
        f.write("\n".join(rows or [result.stdout[-2000:], result.stderr[-2000:]]) + "\n")


def other(topology: Topology) -> PgNode:
    """The node that is not the primary: the standby, running or stopped."""
    primary = topology.primary()
    return next(node for node in topology.postgres if node.port != primary.port)


def synchronous(topology: Topology) -> None:
    primary, standby = topology.primary(), other(topology)
    if standby.pid() is None:
        standby.start()
        until(lambda: primary.replication_state(standby) == "streaming", "standby streaming", 60)
    primary.set_synchronous_standby_names("*")
    until(lambda: primary.sync_state(standby) == "sync", "standby synchronous", 60)


def alone(topology: Topology) -> None:
    primary, standby = topology.primary(), other(topology)
    primary.set_synchronous_standby_names("")
    if standby.pid() is not None:
        standby.kill()


def main() -> None:
    topology = Topology(slot=3)
    url = topology.primary().url.rsplit("/", 1)[0] + "/chronoq_repl"
    topology.primary().sql("CREATE DATABASE chronoq_repl")  # fails harmlessly if it exists
    subprocess.run([CHRONOQ, "migrate", "--database-url", url, "--amqp-url", AMQP], check=True, capture_output=True)
    for n in range(1, ROUNDS + 1):
        for variant, prepare in (("sync", synchronous), ("alone", alone)):
            prepare(topology)
            log(f"{variant} burst #{n}")
            bench(variant, url, "burst", "--jobs", "20000")
            log(f"{variant} steady 200 #{n}")
            bench(variant, url, "steady", "--rate", "200", "--duration", "10")
    synchronous(topology)
    log("done")


if __name__ == "__main__":
    main()
