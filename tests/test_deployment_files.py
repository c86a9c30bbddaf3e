"""The deployment files (compose.yaml, Dockerfile, .ci/run) agree with the code they run.

No services and no Docker engine needed: the files are parsed and every command they pass to
``chronoq`` is parsed by the real CLI parser, so renaming a subcommand or flag breaks this test
instead of a deployment.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from chronoq._runtime.config import Settings
from chronoq.cli import build_parser, load_worker
from chronoq.consumer.registry import Worker

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
CI_RUN = ROOT / ".ci" / "run"

INFRA_SERVICES = {"postgres", "rabbitmq"}
APP_SERVICES = {"migrate", "timer", "worker", "producer"}
DEMO_WORKER = "chronoq.demo:worker"


# --------------------------------------------------------------------------------------------
# compose.yaml
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict) and isinstance(document.get("services"), dict)
    return document["services"]


def _command_args(service: dict) -> list[str]:
    command = service.get("command")
    assert command, "an app service must say which chronoq command it runs"
    if isinstance(command, str):
        return shlex.split(command)
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), command
    return list(command)


def _container_ports(service: dict) -> set[int]:
    """Container ports that are published to the host, from short or long port syntax."""
    found: set[int] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None or "target" in entry:
                found.add(int(entry["target"]))
            continue
        text = str(entry).split("/", 1)[0]  # drop /tcp
        found.add(int(text.rsplit(":", 1)[-1]))
    return found


def test_services_exist(services: dict) -> None:
    assert set(services) >= INFRA_SERVICES | APP_SERVICES, sorted(services)


@pytest.mark.parametrize("name", sorted(INFRA_SERVICES))
def test_infrastructure_has_healthcheck(services: dict, name: str) -> None:
    check = services[name].get("healthcheck")
    assert isinstance(check, dict) and check.get("test"), f"{name} needs a healthcheck"
    test = check["test"]
    text = " ".join(test) if isinstance(test, list) else test
    expected = {"postgres": "pg_isready", "rabbitmq": "rabbitmq-diagnostics"}[name]
    assert expected in text


def test_infrastructure_images(services: dict) -> None:
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.10-management")
    env = services["postgres"].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert env.get("POSTGRES_HOST_AUTH_METHOD") == "trust"
    assert env.get("POSTGRES_DB") == "chronoq"


def test_postgres_runs_autovacuum_often_enough_for_the_wheel(services: dict) -> None:
    command = services["postgres"]["command"]
    assert command[0] == "postgres"  # the image's entrypoint passes options to the server
    options = dict(command[i + 1].split("=", 1) for i, flag in enumerate(command) if flag == "-c")
    assert options["autovacuum_naptime"] == "5s"


def test_rabbitmq_ports_published(services: dict) -> None:
    assert {5672, 15672} <= _container_ports(services["rabbitmq"])


@pytest.mark.parametrize("name", ["timer", "worker"])
def test_two_replicas(services: dict, name: str) -> None:
    assert (services[name].get("deploy") or {}).get("replicas") == 2


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_service_builds_this_repo(services: dict, name: str) -> None:
    build = services[name].get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context in (".", "./"), f"{name} must build the image from this repository"


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_command_parses_with_real_cli(services: dict, name: str) -> None:
    args = _command_args(services[name])
    try:
        parsed = build_parser().parse_args(args)
    except SystemExit as exc:  # argparse reports errors by exiting
        pytest.fail(f"{name}: `chronoq {shlex.join(args)}` is rejected by the CLI parser (exit {exc.code})")
    assert parsed.command == args[0]
    if parsed.command == "worker":
        assert isinstance(load_worker(parsed.target), Worker)


def test_expected_roles(services: dict) -> None:
    commands = {name: _command_args(services[name])[0] for name in APP_SERVICES}
    assert commands["migrate"] == "migrate"
    assert commands["timer"] == "timer"
    assert _command_args(services["worker"])[:2] == ["worker", DEMO_WORKER]
    assert commands["producer"] in {"enqueue", "demo"}


@pytest.mark.parametrize("name", sorted(APP_SERVICES))
def test_app_environment_points_at_compose_services(services: dict, name: str) -> None:
    env = services[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    for key in env:
        if key.startswith("CHRONOQ_"):
            field = key.removeprefix("CHRONOQ_").lower()
            assert field in Settings.model_fields, f"{name}: {key} is not a chronoq setting"
    database, amqp = urlparse(env["CHRONOQ_DATABASE_URL"]), urlparse(env["CHRONOQ_AMQP_URL"])
    assert database.scheme in ("postgresql", "postgres") and database.hostname == "postgres"
    assert database.path == "/chronoq"
    assert amqp.scheme == "amqp" and amqp.hostname == "rabbitmq" and amqp.port == 5672
    # The values must pass the same validation the processes apply.
    Settings(database_url=env["CHRONOQ_DATABASE_URL"], amqp_url=env["CHRONOQ_AMQP_URL"])


def _depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {k: (v or {}).get("condition", "service_started") for k, v in deps.items()}


def test_startup_order(services: dict) -> None:
    assert _depends_on(services["migrate"]) == {"postgres": "service_healthy", "rabbitmq": "service_healthy"}
    assert str(services["migrate"].get("restart", "no")) == "no"
    for name in APP_SERVICES - {"migrate"}:
        assert _depends_on(services[name]).get("migrate") == "service_completed_successfully", name
    for name in ("timer", "worker"):
        assert services[name].get("restart") == "unless-stopped"


def test_demo_worker_is_importable() -> None:
    assert isinstance(load_worker(DEMO_WORKER), Worker)


# --------------------------------------------------------------------------------------------
# compose.yaml, profile `ha`: a 3-node RabbitMQ cluster and a Postgres primary with a synchronous
# standby, and the chronoq stack pointed at every node
# --------------------------------------------------------------------------------------------

HA_RABBIT_NODES = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
HA_POSTGRES = ["postgres-primary", "postgres-standby"]
HA_APP_SERVICES = {f"{name}-ha": name for name in APP_SERVICES}  # the HA twin of each default app service


@pytest.fixture(scope="module")
def configs() -> dict:
    """Top-level ``configs``: file contents the HA services mount."""
    document = yaml.safe_load(COMPOSE.read_text())
    return document.get("configs") or {}


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _mounted_config(service: dict, configs: dict, target_prefix: str) -> str:
    """The content of the one config this service mounts under ``target_prefix``."""
    found = [entry for entry in service.get("configs") or [] if str(entry.get("target", "")).startswith(target_prefix)]
    assert len(found) == 1, f"expected one config mounted under {target_prefix}, got {found}"
    content = (configs.get(found[0]["source"]) or {}).get("content")
    assert isinstance(content, str) and content.strip(), f"config {found[0]['source']} has no inline content"
    return content


def _postgres_options(command: list[str] | str) -> dict[str, str]:
    """``-c name=value`` pairs of a postgres command line (list or shell text)."""
    words = shlex.split(command) if isinstance(command, str) else [w for part in command for w in shlex.split(part)]
    return dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "-c" and "=" in words[i + 1])


def test_ha_services_exist_only_in_the_ha_profile(services: dict) -> None:
    ha = set(HA_RABBIT_NODES) | set(HA_POSTGRES) | set(HA_APP_SERVICES)
    assert ha <= set(services), sorted(ha - set(services))
    for name in ha:
        assert services[name].get("profiles") == ["ha"], name
    # The default stack stays what `docker compose up` starts: no profile on any of its services.
    for name in INFRA_SERVICES | APP_SERVICES:
        assert not services[name].get("profiles"), name


def test_ha_rabbitmq_nodes_share_one_cookie_and_form_one_cluster(services: dict, configs: dict) -> None:
    nodes = [services[name] for name in HA_RABBIT_NODES]
    assert all(node["image"].startswith("rabbitmq:3.10-management") for node in nodes)
    cookies = {_environment(node).get("RABBITMQ_ERLANG_COOKIE") for node in nodes}
    assert len(cookies) == 1 and None not in cookies and "" not in cookies, "the nodes must share one Erlang cookie"
    hostnames = [node.get("hostname") for node in nodes]
    assert hostnames == HA_RABBIT_NODES, "node names (rabbit@<hostname>) must be fixed for peer discovery"
    expected_peers = {f"rabbit@{hostname}" for hostname in hostnames}
    for name, node in zip(HA_RABBIT_NODES, nodes, strict=True):
        config = dict(line.split(" = ", 1) for line in _mounted_config(node, configs, "/etc/rabbitmq/conf.d/").splitlines()
                      if " = " in line)
        assert config["cluster_formation.peer_discovery_backend"] == "classic_config", name
        peers = {value for key, value in config.items() if key.startswith("cluster_formation.classic_config.nodes.")}
        assert peers == expected_peers, name
        check = " ".join(node["healthcheck"]["test"])
        assert "rabbitmq-diagnostics" in check, name
    # Nodes 2 and 3 boot once node 1 serves, so they join its cluster instead of forming their own.
    for name in HA_RABBIT_NODES[1:]:
        assert _depends_on(services[name]) == {"rabbitmq-1": "service_healthy"}, name


def test_ha_standby_follows_the_primary_synchronously(services: dict, configs: dict) -> None:
    primary, standby = services["postgres-primary"], services["postgres-standby"]
    assert primary["image"].startswith("postgres:15") and standby["image"].startswith("postgres:15")
    options = _postgres_options(primary["command"])
    assert options["wal_level"] == "replica" and int(options["max_wal_senders"]) >= 1
    assert options.get("synchronous_commit", "on") in ("on", "remote_write", "remote_apply")
    assert _environment(primary).get("POSTGRES_HOST_AUTH_METHOD") == "trust"
    init = _mounted_config(primary, configs, "/docker-entrypoint-initdb.d/")
    assert "host replication all all trust" in init and "pg_hba.conf" in init, "the standby must be let in to replicate"
    synchronous = r"ALTER SYSTEM SET synchronous_standby_names = '(\*|ANY 1 \(\*\))'"
    assert re.search(synchronous, init), "commits must wait for the standby"

    script = " ".join(standby.get("command") or [])
    basebackup = next(line for line in script.splitlines() if "pg_basebackup" in line).split()
    assert basebackup[basebackup.index("-h") + 1] == "postgres-primary"
    assert "-R" in basebackup, "pg_basebackup -R makes the copy a standby of the primary"
    assert _postgres_options(script.replace("\\\n", " ").split("exec ", 1)[1]).get("hot_standby") == "on"
    assert _depends_on(standby) == {"postgres-primary": "service_healthy"}
    assert "pg_is_in_recovery" in " ".join(standby["healthcheck"]["test"]), "healthy only once it follows the primary"


@pytest.mark.parametrize("name", sorted(HA_APP_SERVICES))
def test_ha_app_service_runs_what_its_single_node_twin_runs(services: dict, name: str) -> None:
    twin = services[HA_APP_SERVICES[name]]
    service = services[name]
    assert service.get("build") == twin.get("build") and service.get("image") == twin.get("image")
    assert _command_args(service) == _command_args(twin)
    build_parser().parse_args(_command_args(service))
    assert service.get("restart") == twin.get("restart")
    assert (service.get("deploy") or {}).get("replicas") == (twin.get("deploy") or {}).get("replicas")


@pytest.mark.parametrize("name", sorted(HA_APP_SERVICES))
def test_ha_app_environment_lists_every_node(services: dict, name: str) -> None:
    env = _environment(services[name])
    amqp = [urlparse(url) for url in env["CHRONOQ_AMQP_URL"].split(",")]
    assert [(url.scheme, url.hostname, url.port) for url in amqp] == [("amqp", node, 5672) for node in HA_RABBIT_NODES]
    database = urlparse(env["CHRONOQ_DATABASE_URL"])
    hosts = database.netloc.rsplit("@", 1)[-1].split(",")
    assert hosts == [f"{host}:5432" for host in HA_POSTGRES]
    assert database.path == "/chronoq" and database.query == "target_session_attrs=read-write"
    Settings(database_url=env["CHRONOQ_DATABASE_URL"], amqp_url=env["CHRONOQ_AMQP_URL"])


def test_ha_startup_order(services: dict) -> None:
    infra = {name: "service_healthy" for name in HA_RABBIT_NODES + HA_POSTGRES}
    assert _depends_on(services["migrate-ha"]) == infra
    for name in set(HA_APP_SERVICES) - {"migrate-ha"}:
        assert _depends_on(services[name]) == {"migrate-ha": "service_completed_successfully"}, name


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return result


def _exec_form(text: str) -> list[str]:
    if text.startswith("["):
        value = json.loads(text)
        assert isinstance(value, list)
        return value
    return shlex.split(text)


def test_dockerfile_base_image() -> None:
    froms = [args for kw, args in _instructions() if kw == "FROM"]
    assert froms, "no FROM"
    image = froms[-1].split()[0]
    match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+)\.(\d+)[\w.-]*", image)
    assert match, f"final stage must be a python image, got {image}"
    assert (int(match[1]), int(match[2])) >= (3, 11)


def test_dockerfile_runs_as_non_root() -> None:
    users = [args for kw, args in _instructions() if kw == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_dockerfile_installs_the_project() -> None:
    runs = [shlex.split(args) for kw, args in _instructions() if kw == "RUN"]
    installs = []
    for words in runs:
        for i, word in enumerate(words):
            if word == "install" and i > 0 and words[i - 1] == "pip":
                installs.append(words[i + 1 :])
    assert installs, "no `pip install`"
    assert any("." in (w.rstrip(";&") for w in rest) for rest in installs), "must `pip install .`"


def test_dockerfile_copies_what_the_build_needs() -> None:
    copies = [shlex.split(args) for kw, args in _instructions() if kw in {"COPY", "ADD"}]
    sources = {src.rstrip("/") for words in copies for src in [w for w in words if not w.startswith("--")][:-1]}
    if "." in sources:
        return  # the whole context
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed = {"pyproject.toml", "src"}
    readme = project.get("readme")
    if isinstance(readme, str):
        needed.add(readme)
    elif isinstance(readme, dict) and "file" in readme:
        needed.add(readme["file"])
    assert needed <= sources, f"the image build needs {sorted(needed - sources)} copied in"
    missing = sorted(s for s in sources if not (ROOT / s).exists())
    assert not missing, f"Dockerfile copies files that are not in the repository: {missing}"


def test_dockerfile_entrypoint() -> None:
    entrypoints = [args for kw, args in _instructions() if kw == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    assert _exec_form(entrypoints[-1])[0] == "chronoq"
    cmds = [args for kw, args in _instructions() if kw == "CMD"]
    assert cmds and _exec_form(cmds[-1]) == ["--help"]


# --------------------------------------------------------------------------------------------
# .ci/run
# --------------------------------------------------------------------------------------------


def test_ci_script_is_executable_bash() -> None:
    assert CI_RUN.is_file()
    assert os.access(CI_RUN, os.X_OK), ".ci/run must be executable"
    bash = shutil.which("bash")
    assert bash, "bash not found"
    result = subprocess.run([bash, "-n", str(CI_RUN)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_ci_script_content() -> None:
    text = CI_RUN.read_text()
    assert "set -euo pipefail" in text
    for needle in ("pg_ctlcluster", "rabbitmq-server -detached", "rabbitmq_management", "bin/ruff", "bin/mypy", "pytest"):
        assert needle in text, f".ci/run does not mention {needle!r}"
