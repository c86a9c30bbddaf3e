"""The fault-injection suite's short run (chaos/README.md): real timers and workers under a seeded
nemesis, judged by the checker. A fixed seed (under the least-privilege roles), a random seed
printed for replay, and a build without the fence that the checker must judge invalid.

These runs restart Postgres and kill RabbitMQ: other tests running at the same time on this
machine see those outages too."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import aio_pika
import pytest

from chaos import services
from chaos.checker import ask_the_queue
from chaos.nemesis import KINDS

ROOT = Path(__file__).resolve().parents[1]
#: Deaths the run must have caused beside the nemesis's own faults.
PASSIVE_DEATHS = ("failpoint", "poison")
#: How much of each failing invariant the assertion shows (CI keeps the end of the output).
SHOWN_COUNTEREXAMPLES = 4


def chaos_run(*args: str, timeout: float) -> dict:
    result = subprocess.run([sys.executable, "-m", "chaos.run", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=timeout, check=False)
    # 0 valid, 1 invalid, both with the report on stdout; anything else is the harness failing.
    failed = result.returncode not in (0, 1) or not result.stdout.lstrip().startswith("{")
    assert not failed, f"harness failed ({result.returncode}):\n{result.stderr[-5000:]}"
    report = json.loads(result.stdout)
    assert report["valid"] == (result.returncode == 0)
    return report


def violations(report: dict) -> dict[str, list[str]]:
    return {name: v["counterexamples"] for name, v in report["invariants"].items() if not v["ok"]}


def diagnosis(report: dict) -> str:
    """What an invalid run's assertion says: the broken invariants with a few counterexamples
    each, the run's timeline and deaths, and where its process logs are."""
    bad = violations(report)
    shown = {name: {"count": len(cs), "first": cs[:SHOWN_COUNTEREXAMPLES]} for name, cs in bad.items()}
    figures = report["figures"]
    return json.dumps({"replay": report["run"]["replay"], "violations": shown, "phases_s": figures.get("phases_s"),
                       "deaths": figures.get("deaths"), "faults": figures.get("faults"),
                       "broker_repairs": figures.get("broker_repairs"),
                       "drain": report["run"].get("drain"), "logs": report["run"]["logs"]}, indent=1, default=str)


def assert_valid_and_eventful(report: dict) -> None:
    assert report["valid"], diagnosis(report)
    figures = report["figures"]
    assert set(figures["faults"]) == set(KINDS), f"faults injected: {figures['faults']}"
    for cause in PASSIVE_DEATHS:
        assert figures["deaths"].get(cause, 0) > 0, f"no {cause} death: {figures['deaths']}"
    assert report["invariants"]["5_attempts_bounded"]["poison_reason"] == "delivery_limit"
    assert set(figures["one_shot_outcomes_by_kind"]["big"]) == {"succeeded"}  # payloads at the size limit


@pytest.mark.timeout(300)
def test_a_fixed_seed_under_least_privilege_roles_is_valid() -> None:
    report = chaos_run("--seed", "4242", "--duration", "30", "--jobs", "600", "--fault-gap", "0.8", "--roles",
                       timeout=280)
    assert report["run"]["roles"]
    assert_valid_and_eventful(report)


@pytest.mark.timeout(300)
def test_a_random_seed_is_valid() -> None:
    seed = random.randrange(1_000_000)
    print(f"chaos seed {seed}: replay with python -m chaos.run --seed {seed} --duration 30 --jobs 600 --fault-gap 0.8")
    report = chaos_run("--seed", str(seed), "--duration", "30", "--jobs", "600", "--fault-gap", "0.8", timeout=280)
    assert_valid_and_eventful(report)


@pytest.mark.timeout(300)
def test_a_build_without_the_fence_is_judged_invalid() -> None:
    # The workers' failpoints at 3 % rather than 0.5 %: a kill between commit and ack is what
    # makes a redelivery of a job that already ran, and at 0.5 % a 500-job run may have none,
    # which would leave the fence untested.
    report = chaos_run("--seed", "977", "--duration", "20", "--jobs", "500", "--fault-gap", "0.8",
                       "--min-faults", "4", "--drain-timeout", "40", "--failpoint-rate", "0.03", "--broken",
                       timeout=280)
    assert not report["valid"]
    # Without dedup and fence a run shows a duplicate effect, a phantom (a handler that ran for an
    # occurrence that ended otherwise, e.g. cancelled) or a run no dispatch explains; which of
    # them depends on the faults' timing.
    fence_broken = ("2_no_duplicate_effect", "3_no_phantom", "8_external_duplicates_within_redeliveries")
    assert any(not report["invariants"][name]["ok"] for name in fence_broken), violations(report)


async def test_the_checker_restarts_a_quorum_queue_left_without_leader_and_still_judges_its_messages(settings) -> None:
    """RabbitMQ can leave a quorum queue without a leader after a broker kill (chaos/README.md):
    its figures are then unknown. The checker restarts it as an operator would, and a message in
    it still counts against invariant 7."""
    queue = f"{settings.namespace}.q.stuck"
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        declared = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.default_exchange.publish(aio_pika.Message(b"left behind"), routing_key=queue)
        assert services.quorum_queue_depth(queue) == 1
        assert services.stop_quorum_queue(queue) == "ok"
        assert services.quorum_queue_depth(queue) is None  # no leader to answer

        depth, repair = await ask_the_queue(queue)

        assert depth == 1
        assert repair is not None and repair["queue"] == queue
        await declared.purge()
        assert await ask_the_queue(queue) == (0, None)
    finally:
        await connection.close()
