"""One lifecycle for every long-running part: run(), stop() (safe twice), signal handling."""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Service(Protocol):
    async def run(self) -> None: ...
    def stop(self) -> None: ...


async def run_until_signalled(service: Service, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Run ``service``; the first SIGTERM/SIGINT asks it to stop gracefully. Handlers are
    restored afterwards, so embedding applications keep their own."""
    loop = asyncio.get_running_loop()
    for sig in signals:
        loop.add_signal_handler(sig, service.stop)
    try:
        await service.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)

