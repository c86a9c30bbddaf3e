"""The ``amqp_url`` setting: one RabbitMQ URL, or a comma-separated list of the nodes of one cluster.

Messages and logs name a node by ``host:port`` only, never by its URL, which carries a password.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: The port a URL without one connects to, by scheme.
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


def split_urls(value: str) -> list[str]:
    """The URLs of a setting, in the order given; empty items between commas are ignored."""
    return [url.strip() for url in value.split(",") if url.strip()]


def node_address(url: str) -> str:
    """``host:port`` of a URL, for messages and logs."""
    parts = urlsplit(url)
    try:
        port: int | str = parts.port or DEFAULT_PORTS.get(parts.scheme) or "?"
    except ValueError:  # not a number in range
        port = "?"
    return f"{parts.hostname or '?'}:{port}"


def _problem(url: str) -> str | None:
    """What is wrong with one URL, or None. Says nothing of the URL's text, which may hold a password."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not url.startswith(f"{parts.scheme}://"):
        return "must start with amqp:// or amqps://"
    try:
        parts.port  # noqa: B018 (raises for a port that is not a number in range)
    except ValueError:
        return "the port is not a number from 0 to 65535"
    if not parts.hostname:
        return "names no host"
    try:
        parts.hostname.encode("idna")
    except UnicodeError:
        return "the host is not a valid host name"
    return None


def check_urls(value: str) -> str:
    """The setting with every URL checked, joined by commas; a ValueError names the first bad
    one by position (and by ``host:port`` if it has them), never by its text."""
    urls = split_urls(value)
    if not urls:
        raise ValueError("must name at least one amqp:// or amqps:// URL")
    for position, url in enumerate(urls, start=1):
        problem = _problem(url)
        if problem is not None:
            if len(urls) == 1:
                raise ValueError(problem)
            where = f" ({node_address(url)})" if problem != "must start with amqp:// or amqps://" else ""
            raise ValueError(f"URL {position} of {len(urls)}{where}: {problem}")
    return ",".join(urls)
