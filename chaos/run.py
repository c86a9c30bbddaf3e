"""Fault injection: real timer and worker processes, a seeded nemesis, a recorded history, and a
checker that judges it. Usage (from the repository root):

    python -m chaos.run --seed 7 --duration 60 --jobs 2000 [--roles] [--broken | --ack-before-commit]
    python -m chaos.run --ha [--slot K] [--async-standby] --seed 7 --duration 600

``--ha`` runs on the HA topology of chaos/ha.py (3 RabbitMQ nodes, a Postgres primary and a
streaming standby; started unless slot K is up, stopped at the end unless ``--keep``) with its
machine-death faults (chaos/machine_faults.py); see chaos/README.md.

``--broken`` starts workers without the dedup and fence and ``--ack-before-commit`` workers that
ack before committing (mutants the harness installs, chaos/mutants.py): the checker must judge
such runs invalid. ``--roles`` connects timers and workers with the
least-privilege roles of ``chronoq migrate --roles``. Prints the checker's JSON (history
included); exits 0 only if it is valid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from chaos import digest, services
from chaos.checker import check
from chaos.engines import Engines, HaEngines, LocalEngines, over_ports
from chaos.fleet import Fleet, failpoint_spec
from chaos.ha import Topology
from chaos.machine_faults import ROUND, MachineFaults
from chaos.nemesis import KINDS, EngineFaults, LocalFaults, Nemesis
from chaos.proxy import Proxy
from chaos.workload import QUEUE, Work, enqueue, settle_trickle, trickle
from chronoq import Producer
from chronoq._runtime.config import Settings
from chronoq._runtime.processes import settings_env
from chronoq._store.connection import CONNECTION_ERRORS
from chronoq._store.migrate import migrate
from chronoq.errors import ServiceUnavailableError

#: A worker's transaction left idle this long (its process stopped, its network gone) is ended
#: by Postgres, which rolls it back and releases its locks: the zombie's lease. A healthy group
#: is never idle that long between statements (handlers time out after 2 s).
WORKER_IDLE_IN_TRANSACTION_MS = 5000
SETUP = """
CREATE TABLE chaos_ledger (job_id bigint, occurrence_key text, attempt int, pid int, at timestamptz);
-- Every start and every dispatch of a wheel row, with the session that made it: the redelivery
-- counts survive the row (which leaves the wheel when its occurrence ends).
CREATE TABLE chaos_wheel_log (occurrence_key text, attempt int, starts int, dispatches int, at timestamptz, app text);
CREATE FUNCTION chaos_log_wheel() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    INSERT INTO public.chaos_wheel_log
    VALUES (NEW.occurrence_key, NEW.attempt, NEW.starts, NEW.dispatches, clock_timestamp(), current_setting('application_name'));
    RETURN NULL;
END
$$;
CREATE TRIGGER chaos_log_wheel AFTER UPDATE ON chronoq.wheel FOR EACH ROW
    WHEN (NEW.starts > OLD.starts OR NEW.dispatches > OLD.dispatches) EXECUTE FUNCTION chaos_log_wheel();
"""
ROLE_GRANTS = "GRANT INSERT ON chaos_ledger TO chronoq_worker"
DRAIN_TIMEOUT = 180.0
#: How long a quorum queue of the run may show no figures (no leader) during the drain before the
#: harness restarts its member, as an operator would.
LEADERLESS_AFTER_S = 20.0
#: Mean seconds between faults: on the HA topology node faults wait for the previous node to be
#: back, so a shorter gap still gives a 10-minute run 30+ machine deaths.
FAULT_GAP_S = {"local": 2.0, "ha": 1.0}
#: Jobs a second enqueued one at a time during an HA run's nemesis (what a failover may lose).
TRICKLE_PER_S = 4.0


async def retrying(what, deadline: float = 60.0):
    """Call ``what()`` until it gets through a database outage (the nemesis may have just
    restarted Postgres under the producer's pool)."""
    end = time.monotonic() + deadline
    while True:
        try:
            return await what()
        except (ServiceUnavailableError, *CONNECTION_ERRORS, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.2)


async def create_database(engines: Engines, name: str) -> str:
    admin = await asyncpg.connect(engines.admin_url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = engines.database_url(name)
    await until_connectable(url)
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SETUP)
    finally:
        await conn.close()
    return url


async def until_connectable(url: str, deadline: float = 30.0) -> None:
    """Wait until the new database can be opened through ``url``. A multi-host URL tries the
    standby first if it is listed first, and asyncpg stops at a standby that has not replayed the
    CREATE DATABASE yet (synchronous commit waits for the standby's flush, not its replay)."""
    end = time.monotonic() + deadline
    while True:
        try:
            conn = await asyncpg.connect(url)
        except asyncpg.InvalidCatalogNameError:
            if time.monotonic() > end:
                raise
            await asyncio.sleep(0.1)
        else:
            await conn.close()
            return


async def drop_database(engines: Engines, name: str) -> None:
    admin = await asyncpg.connect(engines.admin_url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def grant_roles(url: str) -> None:
    result = subprocess.run([sys.executable, "-m", "chronoq", "migrate", "--roles"],
                            env={**os.environ, "CHRONOQ_DATABASE_URL": url}, capture_output=True, text=True, timeout=120,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"chronoq migrate --roles failed: {result.stderr}")


async def wait_started(fleet: Fleet, logs: Path, deadline: float = 90.0) -> None:
    """Wait until every member has logged its start. The supervisor is already running, so one
    that exits first (a broker still recovering from the previous run's kill) is started again
    and its death recorded; one that never starts fails the run with the end of its log."""
    end = time.monotonic() + deadline
    for name in fleet.members:
        marker = b"timer_started" if name.startswith("timer") else b"worker_started"
        log = logs / f"{name}.log"
        while not (log.exists() and marker in log.read_bytes()):
            if time.monotonic() > end:
                tail = log.read_bytes()[-3000:].decode(errors="replace") if log.exists() else "(no log)"
                raise RuntimeError(f"{name} did not start in {deadline:g} s; the end of {log}:\n{tail}")
            await asyncio.sleep(0.05)


async def cancel_some(producer: Producer, work: Work, at: float) -> None:
    await asyncio.sleep(at)
    for job_id in work.to_cancel:
        await retrying(lambda job_id=job_id: producer.cancel(job_id))
        work.cancelled_at[job_id] = time.time()


async def heal(fleet: Fleet, proxies: list[Proxy], engines: Engines) -> None:
    for proxy in proxies:
        proxy.add_latency(0, 0, 0)
    await asyncio.to_thread(engines.heal)
    for name, member in fleet.members.items():
        fleet.signal(name, signal.SIGCONT)  # should anything still be stopped
        if member.held or member.proc is None or member.proc.poll() is not None:
            fleet.start(name)


class LeaderWatch:
    """Watches the run's quorum queues while it drains. RabbitMQ 3.10 can leave a single-node
    quorum queue without a leader after a kill or restart (chaos/README.md); nothing consumes from
    it then, and the drain would wait out its deadline. A queue that shows no figures for
    ``LEADERLESS_AFTER_S`` gets its member restarted, and the repair is reported."""

    def __init__(self, namespace: str, broker: services.Broker) -> None:
        self.namespace, self.broker = namespace, broker
        self.repairs: list[dict] = []
        self._since: dict[str, float] = {}

    async def look(self) -> list[dict] | None:
        """The namespace's queues (None if the management API does not answer), after repairing
        any that has been leaderless for too long."""
        try:
            listing = await asyncio.to_thread(services.queues, self.namespace, self.broker)
        except OSError:  # the management API is not answering (yet): look again
            return None
        now = time.monotonic()
        for q in listing:
            if q.get("type") != "quorum" or q.get("messages") is not None:
                self._since.pop(q["name"], None)
                continue
            if now - self._since.setdefault(q["name"], now) > LEADERLESS_AFTER_S:
                answer = await asyncio.to_thread(services.restart_quorum_queue, q["name"], self.broker)
                self.repairs.append({"queue": q["name"], "during": "drain", "restart": answer})
                self._since[q["name"]] = time.monotonic()  # give it as long again before the next
        return listing


NEWLY_STARTED = "SELECT EXISTS (SELECT 1 FROM chronoq.results WHERE fire_at >= $1 AND started_at IS NOT NULL)"
#: Longest wait, before the cron jobs are cancelled, for work due after the last fault to start.
NEW_WORK_DEADLINE_S = 30.0


async def until_work_started_after(producer: Producer, t: float, deadline: float) -> None:
    """Wait until an occurrence due after ``t`` (the last fault) has run, so that the cron jobs,
    cancelled next, have let every fault's availability be measured (chaos/availability.py)."""
    end = time.monotonic() + deadline
    since = datetime.fromtimestamp(t, UTC)
    while time.monotonic() < end:
        if await retrying(lambda: producer.pool.fetchval(NEWLY_STARTED, since)):
            return
        await asyncio.sleep(0.5)


async def drain(producer: Producer, work: Work, namespace: str, timeout: float, broker: services.Broker,
                last_fault: float | None = None) -> dict:
    """Wait until the one-shot jobs have ended, cancel the cron jobs, then wait until nothing is
    live in the wheel and the job queue is empty (or a deadline: a broken build may never get
    there, e.g. without dedup the poison job's duplicates kill workers forever). Returns what
    the last look saw, for the report: a run that hit the deadline says where work was stuck."""
    end = time.monotonic() + timeout
    summary: dict = {}
    listing: list[dict] | None = None
    watch = LeaderWatch(namespace, broker)
    while time.monotonic() < end:
        summary = await retrying(lambda: producer.summary(work.once))
        if summary["pending"] == 0:
            break
        await watch.look()
        await asyncio.sleep(0.5)
    if last_fault is not None:
        await until_work_started_after(producer, last_fault, min(NEW_WORK_DEADLINE_S, max(end - time.monotonic(), 0)))
    for job_id in work.cron:
        await retrying(lambda job_id=job_id: producer.cancel(job_id))
        work.cancelled_at[job_id] = time.time()
    everything = [*work.once, *work.cron]
    while time.monotonic() < end:
        summary = await retrying(lambda: producer.summary(everything))
        listing = await watch.look()
        figures = [q.get("messages") for q in listing or [] if ".q." in q["name"]]
        # None: no figures yet (after a restart), or no answer from the management API.
        depth = None if listing is None or None in figures else sum(figures)
        if summary["pending"] == 0 and depth == 0:
            break
        await asyncio.sleep(0.5)
    timed_out = time.monotonic() >= end
    state: dict | str | None = None
    if timed_out:
        try:
            state = await asyncio.to_thread(services.broker_state, broker)
        except Exception as exc:  # a diagnostic must never cost the report
            state = f"management API unavailable: {type(exc).__name__}: {exc}"
    return {"timed_out": timed_out, "summary": summary, "queues": listing, "broker": state, "repairs": watch.repairs}


def engines_for(args: argparse.Namespace) -> tuple[Engines, Topology | None]:
    """The machine's own engines, or the HA topology of ``--slot`` (started unless it is up in
    the wanted replication mode)."""
    if not args.ha:
        return LocalEngines(), None
    topology = Topology(slot=args.slot)
    if not (topology.is_up() and topology.synchronous == (not args.async_standby)):
        topology.up(synchronous=not args.async_standby)
    return HaEngines(topology), topology


def proxies_for(engines: Engines, seed: int) -> tuple[list[Proxy], list[Proxy]]:
    """A chaos proxy in front of every Postgres endpoint and every RabbitMQ node, started."""
    postgres = [Proxy("127.0.0.1", port, seed=seed + n) for n, port in enumerate(engines.postgres_ports())]
    rabbit = [Proxy("127.0.0.1", urlsplit(url).port or 5672, seed=seed + len(postgres) + n)
              for n, url in enumerate(engines.amqp_urls())]
    for proxy in (*postgres, *rabbit):
        proxy.start()
    return postgres, rabbit


async def run(args: argparse.Namespace) -> dict:
    engines, topology = await asyncio.to_thread(engines_for, args)
    await asyncio.to_thread(engines.heal)
    name = f"chronoq_chaos_{args.seed}"
    namespace = f"chaos{args.seed}"
    await asyncio.to_thread(services.delete_namespace, namespace, engines.broker())
    url = await create_database(engines, name)
    if args.roles:
        grant_roles(url)
        conn = await asyncpg.connect(url)
        await conn.execute(ROLE_GRANTS)
        await conn.close()
    logs = Path(tempfile.mkdtemp(prefix=f"chronoq-chaos-{args.seed}-"))
    effects, poison = logs / "external-effects.log", logs / "poison-kills.log"
    pg_proxies, amqp_proxies = proxies_for(engines, args.seed)
    proxies = [*pg_proxies, *amqp_proxies]
    amqp_url = ",".join(over_ports(u, [p.port]) for u, p in zip(engines.amqp_urls(), amqp_proxies, strict=True))
    settings = Settings.load(database_url=url, amqp_url=amqp_url, namespace=namespace,
                             redispatch_after="5s", timer_max_idle="1s", shutdown_grace="5s",
                             delivery_limit=args.delivery_limit)
    base = {**settings_env(settings), "CHAOS_EFFECTS_FILE": str(effects), "CHAOS_POISON_FILE": str(poison),
            "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    base.pop("CHRONOQ_FAILPOINTS", None)
    pg_ports = [p.port for p in pg_proxies]
    timer_url = over_ports(url, pg_ports, user="chronoq_timer" if args.roles else None)
    worker_url = over_ports(url, pg_ports, user="chronoq_worker" if args.roles else None,
                            query=f"idle_in_transaction_session_timeout={WORKER_IDLE_IN_TRANSACTION_MS}")
    history: list[dict] = []
    fleet = Fleet(logs, poison, history)
    mutants = [name for name, on in (("no_fence", args.broken), ("ack_before_commit", args.ack_before_commit)) if on]
    for n in range(args.workers):
        env = {**base, "CHRONOQ_DATABASE_URL": worker_url}
        if n < 2 and args.failpoint_rate > 0:
            env["CHRONOQ_FAILPOINTS"] = failpoint_spec("worker", args.failpoint_rate)
        fleet.add(f"worker-{n}", env, mutant=",".join(mutants) or None)
    for n in range(args.timers):
        env = {**base, "CHRONOQ_DATABASE_URL": timer_url}
        if n < 1 and args.failpoint_rate > 0:
            env["CHRONOQ_FAILPOINTS"] = failpoint_spec("timer", args.failpoint_rate)
        fleet.add(f"timer-{n}", env)
    started = time.time()
    phases: dict[str, float] = {}
    drained: dict = {}
    rng_work, rng_nemesis = random.Random(args.seed), random.Random(args.seed * 7919 + 1)
    faults: EngineFaults = LocalFaults() if topology is None else \
        MachineFaults(topology, random.Random(args.seed * 104729 + 3), f"{namespace}.q.{QUEUE}")
    gap = args.fault_gap if args.fault_gap is not None else FAULT_GAP_S["ha" if args.ha else "local"]
    trickle_rate = args.trickle_rate if args.trickle_rate is not None else (TRICKLE_PER_S if args.ha else 0.0)
    try:
        for member in fleet.members:
            fleet.start(member)
        fleet.supervise()
        await wait_started(fleet, logs)
        async with Producer(url) as producer:
            work = await enqueue(producer, rng_work, args.jobs, args.duration)
            phases["nemesis_start"] = time.time()
            nemesis = Nemesis(fleet, proxies, rng_nemesis, history, gap=(gap * 0.5, gap * 1.5), engines=faults)
            during = [nemesis.run(args.duration, len(faults.round) if args.min_faults is None else args.min_faults),
                      cancel_some(producer, work, args.duration / 3)]
            if trickle_rate > 0:
                during.append(trickle(producer, work, random.Random(args.seed + 5), trickle_rate, args.duration, retrying))
            await asyncio.gather(*during)
            phases["nemesis_end"] = time.time()
            await heal(fleet, proxies, engines)
            phases["healed"] = time.time()
            await retrying(lambda: settle_trickle(producer, work))
            last_fault = max((h["t"] for h in history), default=None)
            drained = await drain(producer, work, namespace, args.drain_timeout, engines.broker(), last_fault)
            phases["drained"] = time.time()
            if drained["timed_out"]:  # which processes were still up when the run gave up
                drained["alive"] = {name: fleet.pid(name) is not None for name in fleet.members}
    finally:
        await fleet.stop()  # never leave processes behind, whatever happened
        for proxy in proxies:
            proxy.close()
    conn = await asyncpg.connect(url)
    try:
        report = await check(conn, work, settings, effects=effects, history=history, deaths=fleet.deaths,
                             phases=phases, namespace=namespace, broker=engines.broker())
    finally:
        await conn.close()
    report["replication"]["standby"] = None if topology is None else \
        ("synchronous" if topology.synchronous else "asynchronous")
    report["run"] = {
        "seed": args.seed, "duration_s": args.duration, "jobs": args.jobs, "roles": args.roles,
        "broken": args.broken, "ack_before_commit": args.ack_before_commit, "failpoint_rate": args.failpoint_rate,
        "ha": args.ha, "slot": args.slot if args.ha else None, "fault_gap_s": gap, "trickle_per_s": trickle_rate,
        "wall_s": round(time.time() - started, 1), "logs": str(logs), "replay": replay(args),
        "proxy": {"accepted": [p.accepted for p in proxies], "cut": [p.cut_connections for p in proxies]},
        "drain": drained,
    }
    if not args.keep:
        await asyncio.to_thread(services.delete_namespace, namespace, engines.broker())
        await drop_database(engines, name)
        if topology is not None:
            await asyncio.to_thread(topology.down)
    return report


def replay(args: argparse.Namespace) -> str:
    return (f"python -m chaos.run --seed {args.seed} --duration {args.duration:g} --jobs {args.jobs}"
            + (f" --ha --slot {args.slot}" if args.ha else "") + (" --async-standby" if args.async_standby else "")
            + (f" --fault-gap {args.fault_gap:g}" if args.fault_gap is not None else "")
            + (" --roles" if args.roles else "") + (" --broken" if args.broken else "")
            + (" --ack-before-commit" if args.ack_before_commit else ""))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    parser.add_argument("--duration", type=float, default=60, help="seconds of nemesis")
    parser.add_argument("--jobs", type=int, default=2000, help="one-shot jobs")
    parser.add_argument("--fault-gap", type=float, default=None,
                        help=f"mean seconds between faults (default {FAULT_GAP_S['local']:g}, with --ha {FAULT_GAP_S['ha']:g})")
    parser.add_argument("--min-faults", type=int, default=None,
                        help=f"keep the nemesis going past --duration until this many faults (default: one round, "
                             f"{len(KINDS)} faults, with --ha {len(ROUND)})")
    parser.add_argument("--failpoint-rate", type=float, default=0.005,
                        help="probability of each armed failpoint killing its process per pass (0: off)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--timers", type=int, default=2)
    parser.add_argument("--delivery-limit", type=int, default=10)
    parser.add_argument("--roles", action="store_true", help="timers and workers connect as the least-privilege roles")
    parser.add_argument("--broken", action="store_true", help="workers without dedup and fence (must be invalid)")
    parser.add_argument("--ack-before-commit", action="store_true", help="workers ack before they commit (broken)")
    parser.add_argument("--drain-timeout", type=float, default=DRAIN_TIMEOUT, help="longest wait for the drain")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database and broker objects (and the HA topology) for inspection")
    parser.add_argument("--ha", action="store_true", help="run on the HA topology of chaos/ha.py with machine-death faults")
    parser.add_argument("--slot", type=int, default=0, help="the HA topology's slot (0-9)")
    parser.add_argument("--async-standby", action="store_true",
                        help="with --ha: the Postgres standby replicates asynchronously (measures what a failover loses)")
    parser.add_argument("--trickle-rate", type=float, default=None,
                        help=f"jobs a second enqueued one by one during the nemesis (default 0, with --ha {TRICKLE_PER_S:g})")
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    report = asyncio.run(run(args))
    text = json.dumps(report, indent=2, default=str)
    Path(report["run"]["logs"], "report.json").write_text(text)
    print(digest.render(report), file=sys.stderr)
    print(text)
    sys.exit(0 if report["valid"] else 1)


if __name__ == "__main__":
    main()
