"""Judging a chaos run's history: eight invariants, each with ok, a count and up to 10
counterexamples, plus the run's figures. Sources: Postgres (results, attempts, what is left in
the wheel, the ledger the handlers wrote through ctx.db, the start/dispatch log a trigger kept),
the fsynced external-effect file, the dead-letter queue, the broker's queue depths, and the
history of faults and deaths the harness recorded."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import asyncpg

from chaos import availability, replication, services
from chaos.workload import MAX_BACKFILL, MISFIRE_GRACE_S, QUEUE, Work
from chronoq._runtime.config import Settings
from chronoq.schemas.cron import CronSchedule

#: Longest start lateness accepted for occurrences due after the system healed.
LATENESS_AFTER_RECOVERY_BOUND_S = 10.0
#: How long the broker's queue figures (which lag ~5 s) get to agree that the queues are empty.
QUEUES_EMPTY_DEADLINE_S = 30.0
EXPECTED = {"plain": ("succeeded", None), "flaky": ("succeeded", None), "slow": ("succeeded", None),
            "big": ("succeeded", None), "failing": ("dead", "max_attempts"), "poison": ("dead", "delivery_limit"),
            "cancel": ("cancelled", None)}
WORKER_PID = re.compile(r"^worker@.*:(\d+)$")


def _verdict(bad: list[Any], **evidence: Any) -> dict[str, Any]:
    return {"ok": not bad, "count": len(bad), "counterexamples": [str(b) for b in bad[:10]], **evidence}


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p50, p99 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99))
    return {"n": len(ordered), "p50": round(p50, 3), "p99": round(p99, 3), "max": round(ordered[-1], 3)}


def _pid(app: str) -> int | None:
    match = WORKER_PID.match(app or "")
    return int(match.group(1)) if match else None


def read_effects(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _busy(listing: list[dict]) -> list[dict]:
    """Queues not known to be empty: with messages, unacked deliveries, or no figures at all."""
    return [q for q in listing if q.get("error") or q.get("messages") is None or q["messages"]
            or q.get("messages_unacknowledged")]


async def queues_empty(namespace: str, broker: services.Broker = services.LOCAL) -> tuple[list[dict], list[dict]]:
    """Wait until every queue of the namespace shows no message, ready or unacked. Returns the
    queues still busy (or of unknown depth) at the deadline, and the repairs made on the way.

    The management API's figures lag a few seconds behind the queues, and after a broker kill
    they can stay absent for a quorum queue that has had no leader since: then its leader is
    asked directly (see ask_the_queue)."""
    end = time.monotonic() + QUEUES_EMPTY_DEADLINE_S
    while True:
        try:
            listing = await asyncio.to_thread(services.queues, namespace, broker)
        except OSError as exc:
            listing = [{"name": f"(management API: {exc})", "messages": None, "messages_unacknowledged": None, "error": True}]
        busy = _busy(listing)
        if not busy or time.monotonic() > end:
            break
        await asyncio.sleep(1.0)
    repairs: list[dict] = []
    for q in list(busy):
        if q.get("messages") is None and q.get("type") == "quorum":
            depth, repair = await ask_the_queue(q["name"], broker)
            repairs += [repair] if repair else []
            if depth == 0:
                busy.remove(q)
            else:
                q["messages"] = depth
    return busy, repairs


async def ask_the_queue(queue: str, broker: services.Broker = services.LOCAL) -> tuple[int | None, dict | None]:
    """A quorum queue's depth from its leader. RabbitMQ can leave a single-node quorum queue
    without a leader after a restart (rabbitmq-server#10070); then the harness does what the
    operator would: restarts the queue's member, records it, and asks again. Its messages are
    still judged: a repaired queue must be empty like any other. Returns the depth (None if
    still unknown) and the repair made, if any."""
    depth = await asyncio.to_thread(services.quorum_queue_depth, queue, broker)
    if depth is not None:
        return depth, None
    repair = {"queue": queue, "raft": await asyncio.to_thread(services.quorum_status, queue, broker),
              "restart": await asyncio.to_thread(services.restart_quorum_queue, queue, broker)}
    end = time.monotonic() + QUEUES_EMPTY_DEADLINE_S
    # Each ask takes a second or more (rabbitmqctl starts an Erlang VM), up to 5 s for a leader.
    while depth is None and time.monotonic() < end:
        depth = await asyncio.to_thread(services.quorum_queue_depth, queue, broker)
    return depth, repair


def _ran_late(r: asyncpg.Record) -> bool:
    """Ran, and started more than the grace after its tick: it was judged missed when claimed."""
    return r["state"] == "succeeded" and r["started_at"] is not None \
        and (r["started_at"] - r["fire_at"]).total_seconds() > MISFIRE_GRACE_S


def _too_few_missed_runs(policy: str, ticks: list[asyncpg.Record], missed: list[asyncpg.Record]) -> str | None:
    """The lower bound of a missed-run policy for the ``missed`` ticks of one window (``ticks``:
    all of the job's, oldest first). ``run_once`` runs the latest missed tick of the outage: if
    none in the window ran, the tick after the last ones coalesced must have run, late.
    ``backfill`` skips a missed tick for its cap only once ``MAX_BACKFILL`` missed ticks of the
    outage ran: the ticks just before the first one capped, all run late."""
    if not missed or all(r["state"] == "succeeded" for r in missed):
        return None
    position = {r["occurrence_key"]: n for n, r in enumerate(ticks)}
    if policy == "run_once" and not any(r["state"] == "succeeded" for r in missed):
        n = position[missed[-1]["occurrence_key"]] + 1
        while n < len(ticks) and (ticks[n]["state"], ticks[n]["reason"]) == ("skipped", "misfire"):
            n += 1
        if n >= len(ticks) or not _ran_late(ticks[n]):
            return f"{len(missed)} missed ticks, none ran in their place"
    if policy == "backfill":
        capped = [r for r in missed if (r["state"], r["reason"]) == ("skipped", "backfill_cap")]
        if capped:
            n = position[capped[0]["occurrence_key"]]
            while n > 0 and (ticks[n - 1]["state"], ticks[n - 1]["reason"]) == ("skipped", "backfill_cap"):
                n -= 1
            backfilled = ticks[max(n - MAX_BACKFILL, 0):n]
            if len(backfilled) < MAX_BACKFILL or not all(_ran_late(r) for r in backfilled):
                return f"{capped[0]['occurrence_key']} skipped for the cap, but fewer than {MAX_BACKFILL} missed ticks ran"
    return None


async def check(conn: asyncpg.Connection, work: Work, settings: Settings, *, effects: Path, history: list[dict],
                deaths: list[dict], phases: dict[str, float], namespace: str,
                broker: services.Broker = services.LOCAL) -> dict[str, Any]:
    once, crons = work.once, list(work.cron)
    every_job = once + crons
    results = {r["occurrence_key"]: r for r in await conn.fetch(
        "SELECT r.*, j.max_attempts FROM chronoq.results r JOIN chronoq.jobs j ON j.id = r.job_id"
        " WHERE r.job_id = ANY($1)", every_job)}
    by_job: dict[int, list[asyncpg.Record]] = defaultdict(list)
    for r in results.values():
        by_job[r["job_id"]].append(r)
    ledger = await conn.fetch("SELECT * FROM chaos_ledger")
    ledger_by_key: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in ledger:
        ledger_by_key[row["occurrence_key"]].append(row)
    live = await conn.fetch(
        "SELECT occurrence_key, job_id, attempt, starts, dispatches, head, round(extract(epoch FROM due_at - now())::numeric, 1)"
        " AS due_in_s, round(extract(epoch FROM now() - dispatched_at)::numeric, 1) AS dispatched_s_ago, last_error"
        " FROM chronoq.wheel ORDER BY due_at")
    failed_attempts = await conn.fetch("SELECT occurrence_key, started_at FROM chronoq.attempts")
    attempts = Counter(r["occurrence_key"] for r in failed_attempts)
    log = await conn.fetch("SELECT * FROM chaos_wheel_log ORDER BY at")
    starts: dict[tuple[str, int], int] = defaultdict(int)
    dispatches: dict[tuple[str, int], int] = defaultdict(int)
    for row in log:
        pair = (row["occurrence_key"], row["attempt"])
        starts[pair] = max(starts[pair], row["starts"])
        dispatches[pair] = max(dispatches[pair], row["dispatches"])
    effect_lines = read_effects(effects)
    effects_per_key = Counter(e["key"] for e in effect_lines)
    dead_letters = await asyncio.to_thread(services.take_messages, f"{namespace}.dlq.{QUEUE}", 10_000, broker)
    copies = {(m["properties"].get("headers") or {}).get("x-chronoq-idempotency-key"): m for m in dead_letters
              if str(m["properties"].get("message_id", "")).endswith("#dead")}
    broker_dead_lettered = [m for m in dead_letters if not str(m["properties"].get("message_id", "")).endswith("#dead")]

    # 1. No loss -------------------------------------------------------------------------------
    # Where a live row stands says who dropped it: never dispatched, dispatched and never started,
    # started and never ended, or parked behind an error.
    lost: list[Any] = [
        f"{r['occurrence_key']} still live (attempt {r['attempt']}, dispatches {r['dispatches']}, starts {r['starts']},"
        f" head {r['head']}, due in {r['due_in_s']} s, dispatched {r['dispatched_s_ago']} s ago,"
        f" last error {(r['last_error'] or '-')[:80]})"
        for r in live if r["job_id"] in set(every_job)
    ]
    for job_id in once:
        kind = work.kinds[job_id]
        state, reason = EXPECTED[kind]
        ended = by_job.get(job_id, [])
        if len(ended) != 1:
            lost.append(f"job {job_id} ({kind}) has {len(ended)} terminal occurrences")
            continue
        r = ended[0]
        if r["state"] != state or (reason is not None and r["reason"] != reason):
            lost.append(f"job {job_id} ({kind}) ended {r['state']}/{r['reason']}, expected {state}/{reason or '-'}")
        if r["state"] == "succeeded" and not ledger_by_key[r["occurrence_key"]]:
            lost.append(f"{r['occurrence_key']} ({kind}) succeeded without its effect in the ledger")
        if r["state"] == "dead" and r["occurrence_key"] not in copies:
            lost.append(f"{r['occurrence_key']} ({kind}) dead without a copy in the dead-letter queue")
    for job_id in crons:
        for r in by_job.get(job_id, []):
            if r["state"] == "succeeded" and not ledger_by_key[r["occurrence_key"]]:
                lost.append(f"tick {r['occurrence_key']} succeeded without its effect in the ledger")
            if r["state"] == "dead":
                lost.append(f"tick {r['occurrence_key']} ended dead ({r['reason']})")

    # An enqueue that returned and whose job is gone (a failover to a standby that had not
    # received it) is lost even when its id now names another job: after such a failover the
    # promoted server hands the same ids out again.
    trickled = await conn.fetch("SELECT id, key FROM chronoq.jobs WHERE id = ANY($1)", list(work.trickled.values()))
    existing = {r["id"]: r["key"] for r in trickled}
    lost += [f"enqueue {key} returned job {work.trickled[key]}, which is not that job after the run"
             for key in replication.lost_enqueues(work, existing)]

    # 2. No duplicate effect ---------------------------------------------------------------------
    duplicates = [(k, [(row["pid"], row["attempt"]) for row in rows]) for k, rows in ledger_by_key.items() if len(rows) > 1]

    # 3. No phantom ------------------------------------------------------------------------------
    cancelled_jobs = set(work.to_cancel)
    phantoms: list[Any] = []
    for row in ledger:
        key = row["occurrence_key"]
        result = results.get(key)
        if row["job_id"] not in set(every_job):
            phantoms.append((key, "not an occurrence of any scheduled job"))
        elif result is None or result["state"] != "succeeded":
            phantoms.append((key, f"ran, but ended {result['state'] if result else 'never'}"))
        elif row["attempt"] != result["attempt"]:
            phantoms.append((key, f"effect of attempt {row['attempt']}, but attempt {result['attempt']} succeeded"))
        elif row["at"] < result["run_at"]:
            phantoms.append((key, f"ran at {row['at'].isoformat()}, before its due time {result['run_at'].isoformat()}"))
        if row["job_id"] in cancelled_jobs:
            phantoms.append((key, "ran, but its job was cancelled before it was due"))
        cancelled_at = work.cancelled_at.get(row["job_id"])
        if row["job_id"] in work.cron and cancelled_at is not None and row["at"].timestamp() > cancelled_at:
            phantoms.append((key, "ran after its cron job was cancelled"))

    # 4. Missed-run policies in windows with no live timer; the tick ledger has no holes ----------
    schedule = CronSchedule.parse("* * * * * *")
    holes: list[Any] = []
    for job_id in crons:
        fired = sorted(r["fire_at"] for r in by_job.get(job_id, []))
        if fired:
            expected = {fired[0], *schedule.ticks_between(fired[0], fired[-1], 1_000_000)}
            holes += [(job_id, t.isoformat()) for t in sorted(expected - set(fired))]
    policy_violations: list[Any] = []
    windows = [(h["down"], h["up"]) for h in history if h["fault"] == "timers_down"]
    missed_ticks = 0
    for down, up in windows:
        for job_id, policy in work.cron.items():
            # A tick due while no timer lived, more than the grace before one came back, was
            # certainly judged late: its policy decides it.
            missed = sorted((r for r in by_job.get(job_id, []) if down <= r["fire_at"].timestamp() < up - MISFIRE_GRACE_S),
                            key=lambda r: r["fire_at"])
            missed_ticks += len(missed)
            ran = [r for r in missed if r["state"] == "succeeded"]
            skipped = [r for r in missed if r["state"] == "skipped"]
            where = f"job {job_id} ({policy}), window {down:.1f}-{up:.1f}"
            if policy == "skip" and ran:
                policy_violations.append(f"{where}: {len(ran)} missed ticks ran")
            if policy == "run_once" and len(ran) > 1:
                policy_violations.append(f"{where}: {len(ran)} missed ticks ran, at most one may")
            if policy == "backfill":
                if len(ran) > MAX_BACKFILL:
                    policy_violations.append(f"{where}: {len(ran)} missed ticks ran, cap {MAX_BACKFILL}")
                if ran and skipped and max(r["fire_at"] for r in ran) > min(r["fire_at"] for r in skipped):
                    policy_violations.append(f"{where}: a later missed tick ran while an earlier one was skipped")
            too_few = _too_few_missed_runs(policy, sorted(by_job.get(job_id, []), key=lambda r: r["fire_at"]), missed)
            policy_violations += [f"{where}: {too_few}"] if too_few else []
            want = "backfill_cap" if policy == "backfill" else "misfire"
            policy_violations += [f"{where}: {r['occurrence_key']} skipped for {r['reason']!r}, expected {want!r}"
                                  for r in skipped if r["reason"] != want]

    # 5. Attempts bounded; the poison job dead past the delivery limit ----------------------------
    over_attempts: list[Any] = [(k, r["attempt"], r["max_attempts"]) for k, r in results.items()
                                if r["attempt"] > r["max_attempts"]]
    over_attempts += [(k, f"{n} failed attempts recorded") for k, n in attempts.items()
                      if k in results and n > results[k]["max_attempts"]]
    poison_kills = sum(1 for d in deaths if d["cause"] == "poison")
    poison_result = by_job.get(work.poison or -1, [None])[0]
    poison_starts = max((n for (k, _), n in starts.items() if poison_result and k == poison_result["occurrence_key"]), default=0)
    if poison_result is None or poison_result["state"] != "dead" or poison_result["reason"] != "delivery_limit":
        over_attempts.append(f"poison job {work.poison} not dead with reason delivery_limit: "
                             f"{dict(poison_result) if poison_result else 'no result'}")
    # A first delivery runs in a group whose start count dies with it; every redelivery after
    # it is counted before running: at most delivery_limit + 1 runs of one message.
    if poison_kills > settings.delivery_limit + 1:
        over_attempts.append(f"the poison job killed {poison_kills} workers, delivery limit {settings.delivery_limit}")
    # Its starts are only reported: burying it also needs the broker (its dead-letter copy goes out
    # before the commit), so during an outage the burial rolls back and is counted again.

    # 6. The zombies' late commits were rejected --------------------------------------------------
    zombie_violations: list[Any] = []
    fenced, taken_over, zombie_commits = 0, 0, 0
    for fault in (h for h in history if h["fault"] == "pause_worker" and h.get("pid")):
        pid, stopped, continued = fault["pid"], fault["stopped"], fault["continued"]
        mine = [e for e in effect_lines if e["pid"] == pid and e["t"] >= stopped - 5]
        for e in mine:
            committed = [row for row in ledger_by_key[e["key"]]]
            own = [row for row in committed if row["pid"] == pid]
            if not own:
                fenced += 1  # its effect happened, its transaction's ledger row did not survive
            else:
                zombie_commits += 1
                if len(committed) > 1:
                    zombie_violations.append(
                        f"zombie {pid} committed {e['key']} which {len(committed) - 1} other run(s) also committed")
        # Occurrences the zombie had started that another worker started while it slept.
        for key in {row["occurrence_key"] for row in log if _pid(row["app"]) == pid and row["at"].timestamp() <= continued}:
            if any(row["occurrence_key"] == key and _pid(row["app"]) not in (None, pid)
                   and stopped <= row["at"].timestamp() <= continued for row in log):
                taken_over += 1

    # 7. Everything terminal, queues empty, lateness after recovery bounded ----------------------
    not_terminal = [r["occurrence_key"] for r in live if r["job_id"] in set(every_job)]
    not_terminal += [f"job {j} has no terminal occurrence" for j in once if not by_job.get(j)]
    busy, broker_repairs = await queues_empty(namespace, broker)
    not_terminal += [f"queue {q['name']}: {q.get('messages')} messages, {q.get('messages_unacknowledged')} unacked" for q in busy]
    healed = phases.get("healed", float("inf"))
    lateness_all = [(r["started_at"] - r["run_at"]).total_seconds() for r in results.values()
                    if r["state"] == "succeeded" and r["started_at"] is not None]
    lateness_after = [(r["started_at"] - r["run_at"]).total_seconds() for r in results.values()
                      if r["state"] == "succeeded" and r["started_at"] is not None and r["run_at"].timestamp() >= healed]
    late = _percentiles(lateness_after)
    if late["max"] is not None and late["max"] > LATENESS_AFTER_RECOVERY_BOUND_S:
        not_terminal.append(f"lateness after recovery {late['max']} s over the bound of {LATENESS_AFTER_RECOVERY_BOUND_S} s")
    # Redispatches: a published attempt published again because no outcome came by its lease.
    redispatched = [(k, a, n) for (k, a), n in dispatches.items() if n > 1]

    # 8. External-effect duplicates <= redeliveries ------------------------------------------------
    external_duplicates = sum(n - 1 for n in effects_per_key.values() if n > 1)
    # Every run of a handler must be explained by a delivery of its own: the first dispatch, a
    # timer's re-dispatch (its lease ran out), or a broker redelivery (the handler saw it
    # flagged). Starts are counted too, but a first delivery's start commits with its group, so
    # a worker killed mid-group leaves no count: its redelivery, flagged, explains the rerun.
    deliveries: dict[tuple[str, int], int] = {pair: max(starts.get(pair, 0), dispatches.get(pair, 0))
                                              for pair in set(starts) | set(dispatches)}
    flagged = Counter((e["key"], e["attempt"]) for e in effect_lines if e.get("redelivered"))
    for pair, n in flagged.items():
        deliveries[pair] = deliveries.get(pair, 1) + n
    delivered_per_key: Counter[str] = Counter()
    for (key, _), n in deliveries.items():
        delivered_per_key[key] += n
    redeliveries = sum(n - 1 for n in deliveries.values() if n > 1)
    unexplained = [(k, f"{n} external effects, {delivered_per_key[k]} deliveries") for k, n in effects_per_key.items()
                   if n > delivered_per_key[k]]
    if external_duplicates > redeliveries:
        unexplained.append(f"{external_duplicates} external duplicates, only {redeliveries} redeliveries")

    invariants = {
        "1_no_loss": _verdict(lost, dead_letter_copies=len(copies), broker_dead_lettered=len(broker_dead_lettered)),
        "2_no_duplicate_effect": _verdict(duplicates),
        "3_no_phantom": _verdict(phantoms),
        "4_missed_run_policies_and_no_holes": _verdict(holes + policy_violations, windows_without_timer=len(windows),
                                                        ticks_missed_in_them=missed_ticks),
        "5_attempts_bounded": _verdict(over_attempts, poison_kills=poison_kills, poison_starts=poison_starts,
                                       poison_reason=poison_result["reason"] if poison_result else None),
        "6_zombie_commits_rejected": _verdict(zombie_violations, zombie_attempts_fenced=fenced,
                                              zombie_commits_accepted_alone=zombie_commits,
                                              occurrences_taken_over_from_zombies=taken_over),
        "7_all_terminal_queues_empty_lateness": _verdict(not_terminal, lateness_after_recovery_s=late),
        "8_external_duplicates_within_redeliveries": _verdict(
            unexplained, external_duplicates=external_duplicates, redeliveries=redeliveries,
            ratio=round(external_duplicates / redeliveries, 4) if redeliveries else 0.0),
    }
    started = availability.started(log, [*results.values(), *failed_attempts])
    available = availability.measure(history, started, {k: r["fire_at"].timestamp() for k, r in results.items()})
    lost_in_failover = replication.measure(work, history, effect_lines, existing)
    kinds_by_outcome: dict[str, Counter[str]] = defaultdict(Counter)
    for job_id in once:
        ended = by_job.get(job_id)
        kinds_by_outcome[work.kinds[job_id]][ended[0]["state"] if ended else "none"] += 1
    return {
        "valid": all(v["ok"] for v in invariants.values()),
        "invariants": invariants,
        "figures": {
            "one_shot_jobs": len(once),
            "one_shot_outcomes_by_kind": {k: dict(v) for k, v in kinds_by_outcome.items()},
            "big_payload_bytes": work.big_payload_bytes,
            "cron_ticks": dict(Counter(r["state"] for j in crons for r in by_job.get(j, []))),
            "ledger_rows": len(ledger),
            "external_effects": len(effect_lines),
            "redispatched_attempts": len(redispatched),
            "lateness_s": _percentiles(lateness_all),
            "lateness_after_recovery_s": late,
            "faults": dict(Counter(h["fault"] for h in history)),
            "faults_total": len(history),
            "deaths": dict(Counter(d["cause"] for d in deaths)),
            "phases_s": {k: round(v - phases.get("nemesis_start", v), 1) for k, v in phases.items()},
            "broker_repairs": broker_repairs,
        },
        "availability": available,
        "replication": lost_in_failover,
        "history": history,
        "deaths": deaths,
    }
