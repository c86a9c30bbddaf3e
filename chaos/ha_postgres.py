"""One Postgres 15 server of the local HA pair: its data directory, its postmaster, and what a fault
or a failover step does to it.

Servers run as the ``postgres`` user (initdb refuses root) from the Debian binaries in
``/usr/lib/postgresql/15/bin``, each with its own port, data directory and socket directory, so
the machine's cluster 15/main on 5432 is never read or touched. Settings shared by both nodes live
in ``postgresql.conf`` (a standby gets the primary's copy from ``pg_basebackup``); what differs per
node (port, socket directory, ``cluster_name``) is passed on the server's command line.
``cluster_name`` doubles as the standby's ``application_name`` in ``pg_stat_replication``.

``synchronous_standby_names`` is set with ``ALTER SYSTEM`` on the current primary, so it travels in
``postgresql.auto.conf`` to a standby rebuilt from it and is already right after a promotion.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from chaos.ha_processes import (
    DEADLINE,
    TopologyError,
    alive,
    all_pids,
    children_of,
    command_line_of,
    kill_and_wait,
    run,
    until,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"

# Shared by both nodes. fsync=off: a fault here kills processes, never the kernel, so the page
# cache survives every kill; synchronous replication (the standby's acknowledgement before a
# commit returns) stays real.
SHARED_SETTINGS = """
listen_addresses = '127.0.0.1'
max_connections = 200
shared_buffers = '64MB'
fsync = off
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '512MB'
hot_standby = on
synchronous_commit = on
autovacuum_naptime = 5s
"""


@dataclass
class PgNode:
    """Server ``index`` (1-2) of slot ``slot`` on port 5800+10K+i."""

    slot: int
    index: int
    base: Path

    @property
    def port(self) -> int:
        return 5800 + 10 * self.slot + self.index

    @property
    def dir(self) -> Path:
        return self.base / f"pg-{self.index}"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def cluster_name(self) -> str:
        return f"chronoq-ha{self.slot}-pg{self.index}"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    # -- commands -------------------------------------------------------------------------

    def _as_postgres(self, *args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
        return run(args, user=PG_USER, timeout=timeout)

    def _checked(self, what: str, *args: str, timeout: float = DEADLINE) -> None:
        result = self._as_postgres(*args, timeout=timeout)
        if result.returncode != 0:
            raise TopologyError(f"{self.cluster_name} {what}: {(result.stderr or result.stdout).strip()}")

    def sql(self, *queries: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        """Run SQL through psql over TCP (trust auth); unaligned, tuples only; each query in its own transaction."""
        commands = [part for query in queries for part in ("-c", query)]
        return run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", "postgres",
                    "-XAtq", "-v", "ON_ERROR_STOP=1", *commands], timeout=timeout)

    def value(self, query: str) -> str | None:
        """The first line psql printed, or None if the server did not answer."""
        result = self.sql(query)
        return result.stdout.strip().splitlines()[0] if result.returncode == 0 and result.stdout.strip() else None

    # -- lifecycle ------------------------------------------------------------------------

    def _fresh_dir(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, user=PG_USER, group=PG_USER)

    def init_primary(self) -> None:
        """initdb a new cluster with trust auth (local and 127.0.0.1, replication included)."""
        self._fresh_dir()
        self._checked("initdb", str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                      "-N", "-E", "UTF8", "--locale=C.UTF-8")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(SHARED_SETTINGS)

    def start(self, deadline: float = DEADLINE) -> None:
        """pg_ctl start on this node's port and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.dir} -c cluster_name={self.cluster_name}"
        self._checked("start", str(PG_BIN / "pg_ctl"), "start", "-w", "-t", str(int(deadline)), "-D", str(self.data_dir),
                      "-l", str(self.dir / "postgres.log"), "-o", options, timeout=deadline + 10)
        until(lambda: self.value("SELECT 1") == "1", f"{self.cluster_name} accepting connections", deadline)

    def pid(self) -> int | None:
        """The postmaster's pid, if the one recorded in postmaster.pid is alive and serves this data directory."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError, PermissionError):
            return None
        return pid if alive(pid) and self._is_postmaster(pid) else None

    def _is_postmaster(self, pid: int) -> bool:
        return str(self.data_dir) in command_line_of(pid)

    def stray_pids(self) -> list[int]:
        """Every live process of this server, recorded or not: postmasters on its data directory and
        processes titled with its cluster_name."""
        title = f"postgres: {self.cluster_name}:"
        found = []
        for pid in all_pids():
            line = command_line_of(pid)
            if alive(pid) and (str(self.data_dir) in line or (line and line[0].startswith(title))):
                found.append(pid)
        return found

    def role(self) -> str:
        """"primary", "standby", or "down" (no postmaster, or it does not answer)."""
        if self.pid() is None:
            return "down"
        recovering = self.value("SELECT pg_is_in_recovery()")
        return {"f": "primary", "t": "standby"}.get(recovering or "", "down")

    def writable(self) -> bool:
        """True if a transaction can take an xid and commit here. The commit is local-only, so a
        primary still waiting for a synchronous standby answers too."""
        answer = self.value("SET synchronous_commit = local; SELECT pg_is_in_recovery(), txid_current() > 0")
        return answer == "f|t"

    # -- faults and failover steps ------------------------------------------------------------

    def kill(self) -> None:
        """SIGKILL the postmaster and all its children at once (the machine dies) and wait until they are gone."""
        postmaster = self.pid()
        if postmaster is None:
            raise TopologyError(f"{self.cluster_name} is not running")
        # Stopped first, the postmaster cannot fork a backend between the listing of its children
        # and the kill; an orphan backend would keep the shared memory and block the next start.
        os.kill(postmaster, signal.SIGSTOP)
        kill_and_wait([postmaster, *children_of(postmaster)], self.cluster_name)

    def promote(self, deadline: float = DEADLINE) -> None:
        """pg_ctl promote, then wait until the server accepts writes."""
        self._checked("promote", str(PG_BIN / "pg_ctl"), "promote", "-w", "-t", str(int(deadline)), "-D", str(self.data_dir),
                      timeout=deadline + 10)
        until(self.writable, f"{self.cluster_name} accepting writes after promotion", deadline, every=0.05)

    def rebuild_as_standby(self, of: PgNode, deadline: float = DEADLINE) -> None:
        """Throw this node's data away, take a fresh base backup of ``of`` (``-R`` writes the standby
        settings), start, and wait until ``of`` shows this node streaming."""
        if self.stray_pids():
            kill_and_wait(self.stray_pids(), self.cluster_name)
        self._fresh_dir()
        self._checked("pg_basebackup", str(PG_BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(of.port), "-U", "postgres",
                      "-D", str(self.data_dir), "-R", "-X", "stream", "-c", "fast", timeout=deadline)
        self.start(deadline)
        streaming = f"{self.cluster_name} streaming from {of.cluster_name}"
        until(lambda: of.replication_state(self) == "streaming", streaming, deadline)

    def replication_state(self, standby: PgNode) -> str | None:
        """``state`` of ``standby``'s row in this primary's pg_stat_replication (None if absent)."""
        return self.value(f"SELECT state FROM pg_stat_replication WHERE application_name = '{standby.cluster_name}'")

    def sync_state(self, standby: PgNode) -> str | None:
        """``sync_state`` (sync, quorum, async, potential) of ``standby`` as this primary sees it."""
        return self.value(f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{standby.cluster_name}'")

    def set_synchronous_standby_names(self, names: str) -> None:
        """ALTER SYSTEM on this server and reload; waits until new sessions see the value."""
        result = self.sql(f"ALTER SYSTEM SET synchronous_standby_names = '{names}'", "SELECT pg_reload_conf()")
        if result.returncode != 0:
            raise TopologyError(f"{self.cluster_name} synchronous_standby_names: {result.stderr.strip()}")
        until(lambda: self.value(f"SELECT current_setting('synchronous_standby_names') = '{names}'") == "t",
              f"{self.cluster_name} reloading synchronous_standby_names", every=0.05)

    def remove_files(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)


def available() -> bool:
    """True if the Postgres 15 server binaries this module runs are installed."""
    return all((PG_BIN / name).exists() for name in ("initdb", "pg_ctl", "pg_basebackup", "psql", "postgres"))

