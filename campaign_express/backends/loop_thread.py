"""A bus consumer on a thread and event loop of its own, for the embedded platform.

`manage.py run` serves web and the bidder on uvicorn's loop; the analytics sink and the
loyalty ingest consumer run beside them on threads like this one, so a chDB insert or a
database write never stalls the bid path's loop. In production each is its own process.

Django-free.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from campaign_express.backends.bus import Bus


class LoopThread:
    """Runs `main(stop)` after connecting `bus`, until `stop` is called."""

    def __init__(self, *, name: str, bus: Bus,
                 main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.bus = bus
        self._main = main
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._started.set()
            await self.bus.connect()
            await self._main(self._stop)

        asyncio.run(main())

    def start(self) -> None:
        self._thread.start()
        self._started.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
