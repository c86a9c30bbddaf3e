"""The Postgres URL: which hosts it names, and which of them chronoq may use.

``CHRONOQ_DATABASE_URL`` takes libpq's URL forms, a list of hosts included
(``postgresql://h1:5432,h2:5433/chronoq?target_session_attrs=read-write``): every connection
chronoq opens, a pool's reconnect included, tries the hosts in order and keeps the first that
accepts writes, so after a promotion it lands on the new primary.

chronoq writes on every connection it opens, so it never asks for a session that may be on a
standby: a URL that names several hosts and no ``target_session_attrs`` gets ``read-write`` (a
standby is listed to be failed over to, not written to), and the values that choose a standby
(``standby``, ``read-only``, ``prefer-standby``, or ``any`` among several hosts) are refused.

Each host gets ``connect_timeout`` seconds to give a session (libpq's parameter, per host, read
here because asyncpg does not know it), :data:`DEFAULT_HOST_TIMEOUT` when a URL with several hosts
has none: a dead machine answers nothing, and the next host must not wait for it for long.

Problems are described without the URL: it may hold a password.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

TARGET_SESSION_ATTRS = "target_session_attrs"
#: The libpq environment variable asyncpg reads when the URL has no ``target_session_attrs``.
TARGET_SESSION_ATTRS_ENV = "PGTARGETSESSIONATTRS"
#: What chronoq asks for when several hosts are named without a choice: a session that writes.
READ_WRITE = "read-write"
#: Values that always give a writable session (``primary``: not in recovery, which on a
#: standby-free host and on a promoted one is the same as writable).
_WRITABLE = frozenset({READ_WRITE, "primary"})
_KNOWN = frozenset({*_WRITABLE, "any", "standby", "read-only", "prefer-standby"})
CONNECT_TIMEOUT = "connect_timeout"
#: Seconds each host of a multi-host URL gets to give a session before the next is tried.
DEFAULT_HOST_TIMEOUT = 5.0
#: asyncpg's own connect timeout: what a single host without ``connect_timeout`` keeps.
SINGLE_HOST_TIMEOUT = 60.0


def host_count(url: str) -> int:
    """Hosts the URL names: a comma-separated list in the authority or in ``?host=``; one when
    it names none (libpq's default host)."""
    netloc = urlsplit(url).netloc
    hosts = netloc.rpartition("@")[2]
    if not hosts:
        hosts = _query(url).get("host", "")
    return max(1, len([h for h in hosts.split(",") if h]))


def writable_session_attrs(url: str) -> str | None:
    """The ``target_session_attrs`` chronoq connects with: the URL's (or PGTARGETSESSIONATTRS'),
    ``read-write`` if several hosts are named without one, None (asyncpg's default, any host)
    for a single host without one. Raises ValueError for a value that can choose a standby."""
    chosen = _query(url).get(TARGET_SESSION_ATTRS) or os.environ.get(TARGET_SESSION_ATTRS_ENV)
    several = host_count(url) > 1
    if chosen is None:
        return READ_WRITE if several else None
    if chosen not in _KNOWN:
        raise ValueError(f"{TARGET_SESSION_ATTRS}={chosen[:40]!r} is not one of {', '.join(sorted(_KNOWN))}")
    if chosen in _WRITABLE or (chosen == "any" and not several):
        return chosen
    raise ValueError(
        f"{TARGET_SESSION_ATTRS}={chosen} may choose a standby, and chronoq writes on every "
        f"connection: use {READ_WRITE} (the default with several hosts) or primary"
    )


def single_host_urls(url: str) -> list[str]:
    """The URL once per host it names, in order, without ``connect_timeout``. Hosts listed in
    ``?host=`` (or ports in ``?port=``) stay in one URL, for asyncpg to try in turn."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    parts = parts._replace(query=urlencode([(k, v) for k, v in query if k != CONNECT_TIMEOUT]))
    auth, at, hosts = parts.netloc.rpartition("@")
    if not hosts or any(k in ("host", "port") and "," in v for k, v in query):
        return [urlunsplit(parts)]
    return [urlunsplit(parts._replace(netloc=f"{auth}{at}{host}")) for host in hosts.split(",")]


def host_timeout(url: str) -> float:
    """Seconds each host gets: ``connect_timeout`` as libpq reads it (whole seconds, at least 2;
    0 for no limit of its own, which here is asyncpg's), else the default for the host count."""
    value = _query(url).get(CONNECT_TIMEOUT)
    if value is None:
        return DEFAULT_HOST_TIMEOUT if host_count(url) > 1 else SINGLE_HOST_TIMEOUT
    try:
        seconds = int(value)
    except ValueError:
        raise ValueError(f"{CONNECT_TIMEOUT} must be a whole number of seconds") from None
    return SINGLE_HOST_TIMEOUT if seconds <= 0 else float(max(seconds, 2))


def check_database_url(url: str) -> None:
    """Raises ValueError, without quoting the URL, if chronoq cannot connect with it."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("is not a valid URL (check the hosts)") from None
    for spec in parts.netloc.rpartition("@")[2].split(","):
        host, colon, port = spec.rpartition(":") if not spec.endswith("]") else (spec, "", "")
        if colon and (not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError(f"host {host[:60]!r} has no valid port")
    writable_session_attrs(url)
    host_timeout(url)


def _query(url: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
