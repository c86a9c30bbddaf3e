"""The settings flags, and which command takes which.

Every field of :class:`Settings` is also a flag (``--database-url`` for ``database_url``),
generated from the model so that the two cannot drift apart. A command's help lists the settings
it uses and no other; every setting can also come from its ``CHRONOQ_*`` variable.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic.fields import FieldInfo

from chronoq._broker.topology import Topology
from chronoq._runtime.config import Settings
from chronoq.cli.arguments import duration, integer
from chronoq.errors import ConfigError

#: What a command reads from Postgres, from RabbitMQ, and what a timer or a worker runs with.
DATABASE = ("database_url",)
BROKER = ("amqp_url", "amqp_heartbeat", "namespace", "queue_type", "quorum_replicas", "delivery_limit")
SERVICE = ("shutdown_grace", "metrics_port")
TIMER = (*DATABASE, *BROKER, "claim_batch", "timer_max_idle", "redispatch_after", "retention", "packed_queues",
         "pack_size", *SERVICE)
WORKER = (*DATABASE, *BROKER, "redispatch_after", "concurrency", "batch_size", *SERVICE)
#: The benchmarks and the demo start timers and workers with their own settings.
FLEET = tuple(Settings.model_fields)
GROUP_TITLE = "settings (also CHRONOQ_* environment variables)"


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _setting_type(name: str, field: FieldInfo) -> Callable[[str], Any]:
    """Integers are checked against the setting's bounds here; every other rule is the one
    Settings applies to the environment too. Messages name the CHRONOQ_ variable either way."""
    variable = f"CHRONOQ_{name.upper()}"
    if field.annotation in (int, int | None):
        low, high = -(2**63), 2**63 - 1
        for rule in field.metadata:
            low, high = getattr(rule, "ge", low), getattr(rule, "le", high)
        return integer(variable, low, high)
    if field.annotation is timedelta:
        return duration(variable)
    return str


def add_settings(parser: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """The flags of the settings ``names``, shown in the command's help. The other settings stay
    accepted, unlisted, as they were on every command (scripts pass the same settings to every
    command), and checked all the same. A flag not given leaves its setting unset in the
    namespace, so that the environment (or a flag given before the action of a group) applies."""
    group = parser.add_argument_group(GROUP_TITLE)
    for name, field in Settings.model_fields.items():
        shown = name in names
        (group if shown else parser).add_argument(
            flag(name), dest=f"setting_{name}", type=_setting_type(name, field), default=argparse.SUPPRESS,
            metavar=name.upper(), help=f"{field.description} [env CHRONOQ_{name.upper()}]" if shown else argparse.SUPPRESS,
        )


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {k.removeprefix("setting_"): v for k, v in vars(args).items() if k.startswith("setting_")}
    settings = Settings.load(**overrides)
    for name in ("database_url", "amqp_url"):
        _check_host(name, getattr(settings, name))
    return settings


def _check_host(name: str, url: str) -> None:
    """Refuse a host name no resolver takes (a label over 63 characters, an empty one) before a
    driver tries it: aio-pika's robust connection retries such a URL for ever."""
    try:
        host = urlsplit(url).hostname
        if host:
            host.encode("idna")
    except ValueError:  # UnicodeError is one
        raise ConfigError(f"invalid setting: CHRONOQ_{name.upper()}: the host is not a valid host name") from None


def topology(settings: Settings) -> Topology:
    return Topology.for_settings(settings)
