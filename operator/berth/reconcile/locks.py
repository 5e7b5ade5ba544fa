"""One pass at a time per object: a kopf handler, a timer and a debounced child event
may all ask for a pass of the same object at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ObjectLocks:
    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, namespace: str, name: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        async with lock:
            yield

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted object's lock (kept otherwise: a few bytes per object)."""
        lock = self._locks.get((namespace, name))
        if lock is not None and not lock.locked():
            del self._locks[(namespace, name)]
