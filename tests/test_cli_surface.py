"""The command line's names are a contract: every command and flag that ``chronoq`` accepted
before its commands were split into groups still parses. A command's help lists only the
settings flags it uses; the others are still accepted (scripts pass the same settings to every
command), unlisted."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chronoq._runtime.config import Settings
from chronoq.cli import build_parser
from chronoq.cli.parser import Refused

#: Every command with its required arguments, and the flags it had, listed from the parser as it
#: was before the split (settings flags and --log-level aside: they were on every command).
COMMANDS: dict[str, tuple[list[str], list[str]]] = {
    "migrate": ([], ["--print", "--roles"]),
    "timer": ([], []),
    "schema": ([], []),
    "worker": (["app:worker"], ["--queue"]),
    "enqueue": (["q"], ["--payload", "--delay", "--at", "--key", "--max-attempts", "--timeout"]),
    "schedule": (["q", "--cron", "@daily"], ["--tz", "--misfire", "--misfire-grace", "--max-backfill", "--overlap",
                                              "--payload", "--key", "--max-attempts", "--timeout"]),
    "status": ([], ["--window", "--json", "--watch"]),
    "jobs show": (["1"], ["--json"]),
    "jobs cancel": (["1"], []),
    "jobs pause": (["1"], []),
    "jobs resume": (["1"], []),
    "jobs ls": ([], ["--queue", "--state", "--limit", "--json"]),
    "jobs ticks": (["1"], ["--since", "--limit", "--json"]),
    "dlq ls": ([], ["--queue", "--json"]),
    "dlq show": (["--queue", "q"], ["--limit", "--json"]),
    "dlq replay": (["--queue", "q"], ["--occurrence", "--limit"]),
    "dlq purge": (["--queue", "q"], []),
    "bench": (["burst"], ["--jobs", "--rate", "--duration", "--find-max", "--handler", "--workers", "--timers", "--runs",
                          "--warmup", "--out", "--sizes", "--claim-batches", "--preload", "--autovacuum",
                          "--autovacuum-naptime", "--settle", "--keep", "--output"]),
    "demo": ([], ["--jobs", "--spread", "--workers", "--timers", "--external"]),
}
VALUES = {
    "--queue": "q", "--payload": "{}", "--delay": "30s", "--at": "2030-01-01T09:00:00+01:00", "--key": "k",
    "--max-attempts": "3", "--timeout": "60s", "--tz": "Europe/Berlin", "--misfire": "skip", "--misfire-grace": "5m",
    "--max-backfill": "5", "--overlap": "skip", "--window": "1m", "--state": "active", "--limit": "5",
    "--since": "2026-01-01T00:00:00+00:00", "--occurrence": "1@2030-01-01T00:00:00.000000Z", "--jobs": "10",
    "--rate": "10", "--duration": "1", "--handler": "noop", "--workers": "1", "--timers": "1", "--runs": "1",
    "--warmup": "0", "--out": "results", "--sizes": "10,100", "--claim-batches": "2", "--preload": "10",
    "--autovacuum": "on", "--autovacuum-naptime": "5s", "--settle": "1", "--output": "plot.png", "--spread": "2s",
    "--database-url": "postgresql://h/db", "--amqp-url": "amqp://h/", "--namespace": "ns", "--claim-batch": "100",
    "--timer-max-idle": "2s", "--redispatch-after": "1m", "--retention": "1d", "--delivery-limit": "5",
    "--concurrency": "2", "--batch-size": "8", "--shutdown-grace": "5s", "--metrics-port": "9100",
    "--packed-queues": "a,b", "--pack-size": "50", "--queue-type": "classic", "--log-level": "DEBUG",
    "--amqp-heartbeat": "5s", "--quorum-replicas": "3",
}
DATABASE = {"--database-url"}
BROKER = {"--amqp-url", "--amqp-heartbeat", "--namespace", "--queue-type", "--quorum-replicas", "--delivery-limit"}
SERVICE = {"--shutdown-grace", "--metrics-port"}
EVERY_SETTING = {"--" + name.replace("_", "-") for name in Settings.model_fields}
#: The settings flags each command takes now: those whose setting it reads.
SETTINGS_USED = {
    "migrate": DATABASE | BROKER,
    "timer": DATABASE | BROKER | SERVICE | {"--claim-batch", "--timer-max-idle", "--redispatch-after", "--retention",
                                            "--packed-queues", "--pack-size"},
    "worker": DATABASE | BROKER | SERVICE | {"--redispatch-after", "--concurrency", "--batch-size"},
    "schema": set(),
    "dlq ls": DATABASE | BROKER, "dlq replay": DATABASE | BROKER, "dlq show": BROKER, "dlq purge": BROKER,
    "bench": EVERY_SETTING, "demo": EVERY_SETTING,
}


def _parse(argv: list[str]):
    return build_parser().parse_args(argv)


def _cases() -> list[tuple[str, list[str], str]]:
    return [(command, required, flag) for command, (required, flags) in COMMANDS.items()
            for flag in [*flags, "--log-level", *sorted(EVERY_SETTING)]]


@pytest.mark.parametrize(("command", "required", "flag"), _cases(), ids=[f"{c}-{f}" for c, _, f in _cases()])
def test_every_command_and_flag_of_before_still_parses(command: str, required: list[str], flag: str) -> None:
    argv = [*command.split(), *required, flag]
    if flag in VALUES:
        argv.append(VALUES[flag])
    args = _parse(argv)
    assert callable(args.run)
    if flag in EVERY_SETTING:
        assert getattr(args, "setting_" + flag[2:].replace("-", "_")) is not None


@pytest.mark.parametrize("command", list(COMMANDS))
def test_the_help_of_a_command_lists_the_settings_it_uses_and_no_other(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        _parse([*command.split(), "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    used = SETTINGS_USED.get(command, DATABASE)  # submitting and inspecting jobs reads Postgres only
    assert {flag for flag in EVERY_SETTING if f"{flag} " in shown} == used, shown


def test_a_setting_a_command_does_not_use_is_still_checked(capsys) -> None:
    with pytest.raises(Refused) as refused:
        _parse(["status", "--claim-batch", "0"])
    assert "CHRONOQ_CLAIM_BATCH" in refused.value.message


@pytest.mark.parametrize("group", ["jobs", "dlq"])
def test_a_setting_every_action_of_a_group_uses_may_come_before_the_action(group: str) -> None:
    flag, value = ("--database-url", "postgresql://h/db") if group == "jobs" else ("--amqp-url", "amqp://h/")
    action = ["ls"]
    args = _parse([group, flag, value, "--log-level", "DEBUG", *action])
    assert (args.log_level, getattr(args, "setting_" + flag[2:].replace("-", "_"))) == ("DEBUG", value)


def test_help_of_a_command_shows_only_its_own_flags() -> None:
    shown = subprocess.run([sys.executable, "-m", "chronoq", "jobs", "show", "--help"], capture_output=True, text=True,
                           check=True).stdout
    assert "--database-url" in shown and "--json" in shown
    assert "--claim-batch" not in shown and "--amqp-url" not in shown


def test_version_names_the_installed_package() -> None:
    from importlib import metadata

    shown = subprocess.run([sys.executable, "-m", "chronoq", "--version"], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == f"chronoq {metadata.version('chronoq')}"
