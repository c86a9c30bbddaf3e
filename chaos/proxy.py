"""A small TCP proxy between chronoq's services and Postgres or RabbitMQ, for the nemesis.

It runs in a thread of its own with its own event loop, so that nothing the harness does (a
blocking ``rabbitmqctl``, a slow check) delays the bytes it forwards. On command it adds latency
to every chunk in both directions for a while (order kept: a chunk is never written before the
one read ahead of it) or cuts every open connection at once (both sides aborted, like a
network partition healing straight away: new connections are accepted again).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from concurrent.futures import Future

CHUNK = 64 * 1024


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int, *, seed: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.accepted = 0
        self.cut_connections = 0
        self._rng = random.Random(seed)
        self._latency: tuple[float, float] = (0.0, 0.0)
        self._latency_until = 0.0
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"proxy-{upstream_port}", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> int:
        """Listen on a free loopback port; returns it."""
        self._thread.start()
        self._call(self._listen()).result(timeout=10)
        return self.port

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close()).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    def add_latency(self, low: float, high: float, seconds: float) -> None:
        """Delay every chunk by low..high seconds for the next ``seconds``."""
        self._latency = (low, high)
        self._latency_until = time.monotonic() + seconds

    def cut(self) -> int:
        """Abort every open connection (both ends); returns how many were cut."""
        return self._call(self._cut()).result(timeout=10)

    def _call(self, coro) -> Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()
        # The connections' own tasks end here, on a running loop: left pending, they would be
        # finalised after the loop closed and fail there.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _cut(self) -> int:
        pairs, self._pairs = list(self._pairs), set()
        for client, server in pairs:
            client.transport.abort()
            server.transport.abort()
        self.cut_connections += len(pairs)
        return len(pairs)

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.transport.abort()
            return
        self.accepted += 1
        pair = (client_writer, server_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer, pair), self._pipe(server_reader, client_writer, pair))
        finally:
            self._pairs.discard(pair)
            client_writer.transport.abort()
            server_writer.transport.abort()

    def _delay(self) -> float:
        if time.monotonic() >= self._latency_until:
            return 0.0
        return self._rng.uniform(*self._latency)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        """Forward one direction; a chunk is written at (its read time + a delay), in order."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)  # backpressure

        async def write() -> None:
            while True:
                at, data = await chunks.get()
                if not data:
                    break
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        writing = asyncio.ensure_future(write())
        last = 0.0
        try:
            while True:
                data = await reader.read(CHUNK)
                last = max(last, time.monotonic() + self._delay())
                await chunks.put((last, data))
                if not data:
                    break
            await writing
        except (OSError, asyncio.IncompleteReadError):
            for end in pair:  # one side broke: the connection is gone, on both sides
                end.transport.abort()
        finally:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
