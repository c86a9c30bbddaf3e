"""The command line never shows a traceback. A bad argument, or a database or broker that is
unreachable, missing or misconfigured, ends every command with one short line on stderr and a
non-zero exit code; the line repeats at most a short prefix of what the command was given, and
nothing is stored."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from chronoq.cli import main
from chronoq.cli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    MESSAGE_LENGTH,
    bounded,
)
from chronoq.schemas.rules import ECHO_LENGTH
from tests.conftest import child_env

LONG = "x" * 10_000
#: A port nothing listens on.
CLOSED = "127.0.0.1:1"

REFUSED_WHILE_PARSING = [
    pytest.param(["jobs", "ls", "--limit", "-5"], id="negative-limit"),
    pytest.param(["jobs", "ls", "--limit", "100001"], id="limit-over-the-cap"),
    pytest.param(["jobs", "ticks", "1", "--limit", "9" * 10_000], id="limit-of-10k-digits"),
    pytest.param(["jobs", "ls", "--queue", "q\nq"], id="newline-in-queue-filter"),
    pytest.param(["jobs", "ls", "--state", LONG], id="long-state"),
    pytest.param(["jobs", "show", "99999999999999999999"], id="id-beyond-64-bits"),
    pytest.param(["jobs", "show", "9223372036854775808"], id="id-one-past-bigint"),
    pytest.param(["jobs", "cancel", "-1"], id="negative-id"),
    pytest.param(["jobs", "pause", LONG], id="id-not-a-number"),
    pytest.param(["jobs", "resume", "0"], id="id-zero"),
    pytest.param(["jobs", "ticks", "1", "--since", "2026-01-01T00:00:00"], id="since-without-offset"),
    pytest.param(["jobs", "ticks", "1", "--since", LONG], id="long-since"),
    pytest.param(["status", "--window", "99999999d"], id="huge-window"),
    pytest.param(["status", "--window", "0s"], id="empty-window"),
    pytest.param(["status", "--window", LONG], id="long-window"),
    pytest.param(["enqueue", "q\n"], id="newline-in-queue"),
    pytest.param(["enqueue", LONG], id="10k-queue"),
    pytest.param(["enqueue", "q", "--key", "a\nb"], id="newline-in-key"),
    pytest.param(["enqueue", "q", "--key", LONG], id="10k-key"),
    pytest.param(["enqueue", "q", "--payload", "{not json"], id="payload-not-json"),
    pytest.param(["enqueue", "q", "--payload", "1" + "0" * 30], id="payload-integer-of-10-to-the-30"),
    pytest.param(["enqueue", "q", "--payload", "NaN"], id="payload-nan"),
    pytest.param(["enqueue", "q", "--payload", '{"' + LONG + '": ' + "9" * 30 + "}"], id="payload-long-key-big-integer"),
    pytest.param(["enqueue", "q", "--at", "2030-01-01T09:00:00"], id="at-without-offset"),
    pytest.param(["enqueue", "q", "--at", "99999-01-01T00:00:00+00:00"], id="at-year-99999"),
    pytest.param(["enqueue", "q", "--at", "9999-12-31T23:59:59-14:00"], id="at-beyond-the-last-year"),
    pytest.param(["enqueue", "q", "--at", "1900-01-01T00:00:00Z"], id="at-before-1970"),
    pytest.param(["enqueue", "q", "--at", LONG], id="10k-at"),
    pytest.param(["enqueue", "q", "--delay", "99999999999999d"], id="delay-overflowing"),
    pytest.param(["enqueue", "q", "--delay=-5s"], id="negative-delay"),
    pytest.param(["enqueue", "q", "--max-attempts", "0"], id="zero-attempts"),
    pytest.param(["enqueue", "q", "--max-attempts", "1" * 50], id="attempts-beyond-64-bits"),
    pytest.param(["enqueue", "q", "--timeout", "1h"], id="timeout-over-the-cap"),
    pytest.param(["schedule", "q", "--cron", LONG], id="10k-cron"),
    pytest.param(["schedule", "q", "--cron", "0 0 30 2 *"], id="cron-that-never-fires"),
    pytest.param(["schedule", "q", "--cron", "@daily", "--tz", LONG], id="10k-zone"),
    pytest.param(["schedule", "q", "--cron", "@daily", "--tz", "../../etc/passwd"], id="zone-as-a-path"),
    pytest.param(["schedule", "q", "--cron", "@daily", "--misfire", LONG], id="long-misfire"),
    pytest.param(["schedule", "q", "--cron", "@daily", "--misfire-grace", "99999999d"], id="huge-misfire-grace"),
    pytest.param(["schedule", "q", "--cron", "@daily", "--max-backfill", "-1"], id="negative-backfill"),
    pytest.param(["schedule", "q", "--cron", "@daily", "--jitter", LONG], id="10k-jitter"),
    pytest.param(["schedule", "q", "--cron", "@every 0s"], id="every-zero-seconds"),
    pytest.param(["schedule", "q", "--cron", "@every " + LONG], id="every-10k"),
    pytest.param(["schedule", "--cron", "@daily", "--preview", "1001"], id="preview-too-many"),
    pytest.param(["schedule", "--cron", "@daily", "--preview", "3", "--after", "2030-01-01T00:00:00"],
                 id="preview-after-without-offset"),
    pytest.param(["enqueue", "q", "--jitter", "5s"], id="jitter-on-a-one-shot-job"),
    pytest.param(["jobs", "trigger", "0"], id="trigger-job-zero"),
    pytest.param(["worker", "tests.handlers:worker", "--queue", LONG], id="worker-10k-queue"),
    pytest.param(["dlq", "ls", "--queue", "amq.x"], id="dlq-reserved-queue"),
    pytest.param(["dlq", "show", "--queue", "q", "--limit", "0"], id="dlq-zero-limit"),
    pytest.param(["dlq", "replay", "--queue", "q", "--occurrence", LONG], id="dlq-10k-occurrence"),
    pytest.param(["dlq", "replay", "--queue", "q", "--limit", "-1"], id="dlq-negative-limit"),
    pytest.param(["dlq", "purge", "--queue", "q\n"], id="dlq-newline-in-queue"),
    pytest.param(["bench", LONG], id="bench-10k-scenario"),
    pytest.param(["bench", "burst", "--jobs", "0"], id="bench-zero-jobs"),
    pytest.param(["bench", "steady", "--rate", "1e9"], id="bench-rate-with-exponent"),
    pytest.param(["bench", "steady", "--duration", "-1"], id="bench-negative-duration"),
    pytest.param(["bench", "burst", "--workers", "1000"], id="bench-1000-workers"),
    pytest.param(["bench", "memory", "--settle", "nan"], id="bench-nan-settle"),
    pytest.param(["bench", "scale", "--sizes", LONG], id="bench-10k-sizes"),
    pytest.param(["bench", "churn", "--autovacuum-naptime", "99999999999d"], id="bench-naptime-overflowing"),
    pytest.param(["demo", "--jobs", "99999999999"], id="demo-too-many-jobs"),
    pytest.param(["demo", "--spread", LONG], id="demo-10k-spread"),
    pytest.param(["demo", "--timers", "0"], id="demo-no-timer"),
    pytest.param(["status", "--claim-batch", "9" * 10_000], id="setting-of-10k-digits"),
    pytest.param(["timer", "--metrics-port", "70000"], id="setting-out-of-range"),
    pytest.param(["status", "--retention", LONG], id="setting-10k-duration"),
    pytest.param(["migrate", "--log-level", LONG], id="long-log-level"),
    pytest.param([LONG], id="10k-command"),
    pytest.param(["status", LONG], id="10k-extra-argument"),
    pytest.param(["status", "--json=" + LONG], id="10k-value-of-a-switch"),
]


def _refused_on_one_short_line(stderr: str, args: Sequence[str]) -> str:
    """The one line of ``stderr``, checked: short, no traceback, no long echo of an argument."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    (line,) = lines
    assert len(line) < 300, line
    for value in args:
        windows = {value[i : i + ECHO_LENGTH + 1] for i in range(len(value) - ECHO_LENGTH)}
        assert not any(window in line for window in windows), (value[:60], line)
    return line


def _chronoq(settings, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "chronoq", *args], env=child_env(settings, **extra_env),
                          capture_output=True, text=True, timeout=60, check=False)


async def _nothing_stored(db) -> None:
    assert await db.fetchval("SELECT count(*) FROM chronoq.jobs") == 0
    assert await db.fetchval("SELECT count(*) FROM chronoq.wheel") == 0


def _with(url: str, *, netloc: str | None = None, path: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=netloc or parts.netloc, path=path or parts.path))


@pytest.fixture
def nowhere(monkeypatch) -> None:
    """Settings that reach nothing: a command whose refusal failed ends there, touching nothing."""
    monkeypatch.setenv("CHRONOQ_DATABASE_URL", f"postgresql://postgres@{CLOSED}/chronoq")
    monkeypatch.setenv("CHRONOQ_AMQP_URL", f"amqp://guest:guest@{CLOSED}/")


@pytest.mark.parametrize("args", REFUSED_WHILE_PARSING)
def test_a_bad_argument_is_refused_while_parsing_on_one_short_line(args: list[str], capsys, nowhere) -> None:
    # Refused before the settings are read: nothing is connected to, so nothing can be stored.
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == EXIT_USAGE
    captured = capsys.readouterr()
    line = _refused_on_one_short_line(captured.err, args)
    assert line.startswith("chronoq") and "error:" in line and "--help" in line, line
    assert captured.out == ""


@pytest.mark.parametrize(("args", "fragment"), [
    pytest.param(["jobs", "show", "99999999999999999999"], "outside 1..9223372036854775807", id="id-beyond-64-bits"),
    pytest.param(["jobs", "ls", "--limit", "-5"], "outside 1..100000", id="negative-limit"),
    pytest.param(["status", "--window", "99999999d"], "at most 36525 days", id="huge-window"),
    pytest.param(["enqueue", "q\n", "--payload", "{}"], "does not match", id="newline-in-queue"),
    pytest.param(["enqueue", "q", "--key", "k\n"], "printable", id="newline-in-key"),
    pytest.param(["enqueue", "q", "--payload", "{not json"], "not valid JSON", id="payload-not-json"),
    pytest.param(["enqueue", "q", "--payload", "1" + "0" * 30], "64-bit", id="payload-integer-of-10-to-the-30"),
    pytest.param(["enqueue", "q", "--at", "2030-01-01T09:00:00"], "naive", id="at-without-offset"),
    pytest.param(["enqueue", "q", "--at", "99999-01-01T00:00:00+00:00"], "ISO 8601", id="at-year-99999"),
    pytest.param(["schedule", "q", "--cron", "@daily", "--key", LONG], "1-200 characters", id="10k-key"),
    pytest.param(["schedule", "q", "--cron", "0 * * * *", "--jitter", "2h"], "jitter: 7200 seconds is longer than the "
                 "shortest interval", id="jitter-longer-than-the-interval"),
    pytest.param(["schedule", "--cron", "@daily"], "queue: a queue is required", id="schedule-without-a-queue"),
    pytest.param(["enqueue", "q", "--debounce", "5s"], "debounce: needs a key", id="debounce-without-key"),
    pytest.param(["enqueue", "q", "--key", "k", "--debounce", "10s", "--max-wait", "5s"],
                 "max_wait: must be at least debounce", id="max-wait-below-debounce"),
    pytest.param(["enqueue", "q", "--key", "k", "--on-conflict", "update"], "is not one of keep, replace",
                 id="unknown-on-conflict"),
    pytest.param(["enqueue", "q", "--key", "k", "--debounce", "0s"], "debounce: must be positive", id="zero-debounce"),
])
async def test_the_cli_refuses_bad_input_on_one_line_and_stores_nothing(settings, db, args, fragment) -> None:
    result = _chronoq(settings, *args)
    assert result.returncode == EXIT_USAGE, result.stderr
    assert fragment in _refused_on_one_short_line(result.stderr, args)
    assert result.stdout == ""
    await _nothing_stored(db)


def _missing_database(url: str) -> str:
    return _with(url, path=f"/chronoq_missing_{uuid.uuid4().hex[:8]}")


def _missing_role(url: str) -> str:
    return _with(url, netloc=f"nosuchrole@{urlsplit(url).hostname}:{urlsplit(url).port or 5432}")


def _closed(url: str) -> str:
    return _with(url, netloc=f"{urlsplit(url).username or 'postgres'}@{CLOSED}")


#: (arguments, setting: what makes it fail, exit code, fragment of the line)
def _broker(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


SERVICES = [
    pytest.param(["jobs", "ls"], ("database_url", _missing_database), EXIT_USAGE, "does not exist", id="ls-missing-database"),
    pytest.param(["jobs", "show", "1"], ("database_url", _missing_role), EXIT_USAGE, "role", id="show-missing-role"),
    pytest.param(["enqueue", "q"], ("database_url", _closed), EXIT_UNAVAILABLE, "Postgres", id="enqueue-unreachable-database"),
    pytest.param(["status"], ("database_url", _closed), EXIT_UNAVAILABLE, "Postgres", id="status-unreachable-database"),
    pytest.param(["migrate"], ("database_url", _missing_role), EXIT_USAGE, "role", id="migrate-missing-role"),
    pytest.param(["timer"], ("database_url", _closed), EXIT_UNAVAILABLE, "Postgres", id="timer-unreachable-database"),
    pytest.param(["dlq", "ls"], ("database_url", _missing_database), EXIT_USAGE, "does not exist", id="dlq-ls-missing-database"),
    pytest.param(["dlq", "replay", "--queue", "q"], ("database_url", _missing_role), EXIT_USAGE, "role",
                 id="dlq-replay-missing-role"),
    pytest.param(["jobs", "ls"], ("database_url", lambda url: _with(url, netloc="postgres@127.0.0.1:99999999")),
                 EXIT_USAGE, "CHRONOQ_DATABASE_URL", id="ls-port-out-of-range"),
    pytest.param(["dlq", "show", "--queue", "q"], ("amqp_url", lambda url: _with(url, netloc=f"guest:guest@{CLOSED}")),
                 EXIT_UNAVAILABLE, "RabbitMQ", id="dlq-show-unreachable-broker"),
    pytest.param(["dlq", "purge", "--queue", "q"], ("amqp_url", lambda url: _with(url, netloc=f"guest:guest@{CLOSED}")),
                 EXIT_UNAVAILABLE, "RabbitMQ", id="dlq-purge-unreachable-broker"),
    pytest.param(["worker", "tests.handlers:worker"], ("amqp_url", lambda url: _with(url, netloc=f"guest:guest@{CLOSED}")),
                 EXIT_UNAVAILABLE, "RabbitMQ", id="worker-unreachable-broker"),
    pytest.param(["dlq", "show", "--queue", "q"], ("amqp_url", lambda url: _with(url, path="/no-such-vhost")),
                 EXIT_UNAVAILABLE, "virtual host", id="dlq-show-missing-virtual-host"),
    pytest.param(["dlq", "purge", "--queue", "q"], ("amqp_url", lambda url: _with(url, netloc=f"guest:wrong@{_broker(url)}")),
                 EXIT_USAGE, "refused the login", id="dlq-purge-wrong-password"),
    pytest.param(["dlq", "ls"], ("amqp_url", lambda url: _with(url, netloc="h" * 100)),
                 EXIT_USAGE, "CHRONOQ_AMQP_URL", id="dlq-ls-host-no-resolver-takes"),
    pytest.param(["dlq", "show", "--queue", "never-used"], None, EXIT_USAGE, "no dead-letter queue",
                 id="dlq-show-missing-dead-letter-queue"),
]


@pytest.mark.parametrize(("args", "broken", "code", "fragment"), SERVICES)
async def test_a_missing_unreachable_or_misconfigured_service_ends_a_command_on_one_line(
    settings, db, args, broken, code, fragment,
) -> None:
    extra = {}
    if broken is not None:
        name, breaking = broken
        extra[f"CHRONOQ_{name.upper()}"] = breaking(getattr(settings, name))
    result = _chronoq(settings, *args, **extra)
    assert result.returncode == code, result.stderr
    assert fragment in _refused_on_one_short_line(result.stderr, [*args, *extra.values()])
    await _nothing_stored(db)


def test_an_unexpected_error_is_one_line_and_its_traceback_is_logged_only_at_debug(settings, tmp_path: Path) -> None:
    (tmp_path / "broken_module.py").write_text('def __getattr__(name):\n    raise RuntimeError("boom")\n')
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), child_env(settings)["PYTHONPATH"]])}
    result = _chronoq(settings, "worker", "broken_module:worker", **env)
    assert result.returncode == EXIT_FAILURE
    line = _refused_on_one_short_line(result.stderr, [])
    assert "internal error: RuntimeError" in line and "--log-level DEBUG" in line
    debug = _chronoq(settings, "worker", "broken_module:worker", "--log-level", "DEBUG", **env)
    assert debug.returncode == EXIT_FAILURE
    assert "Traceback" in debug.stderr and "boom" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1] == line


def test_ctrl_c_while_connecting_ends_the_command_on_one_line(settings) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = _with(settings.database_url, netloc=f"postgres@127.0.0.1:{silent.getsockname()[1]}")
        process = subprocess.Popen([sys.executable, "-m", "chronoq", "jobs", "ls"],
                                   env=child_env(settings, CHRONOQ_DATABASE_URL=url),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        silent.settimeout(30)
        connection, _ = silent.accept()
        with connection:
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == EXIT_INTERRUPTED
    assert _refused_on_one_short_line(stderr, []) == "interrupted"


def test_an_error_line_repeats_at_most_a_short_prefix_of_any_input() -> None:
    hostile = "y" * 500
    line = bounded(f'database "{hostile[:63]}" does not exist; invalid choice: {hostile!r}', [hostile])
    assert "y" * (ECHO_LENGTH + 1) not in line
    assert line == f'database "{"y" * ECHO_LENGTH}..." does not exist; invalid choice: \'{"y" * ECHO_LENGTH}...\''
    assert bounded("first\nsecond\x1b[31m", []) == "first second [31m"
    assert len(bounded("z " * 1000, [])) == MESSAGE_LENGTH
    assert bounded("short and sweet", [hostile]) == "short and sweet"
