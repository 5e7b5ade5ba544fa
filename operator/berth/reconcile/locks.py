"""One pass at a time per object: a kopf handler, a timer and a debounced child event
may all ask for a pass of the same object at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ObjectLocks:
    """Locks per object and per event loop: an asyncio.Lock belongs to one loop, and a
    pass run from elsewhere (a CLI, a test) must not trip over the operator's."""

    def __init__(self) -> None:
        self._locks: dict[tuple[int, str, str], asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, namespace: str, name: str) -> AsyncIterator[None]:
        key = (id(asyncio.get_running_loop()), namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield

    def forget(self, namespace: str, name: str) -> None:
        """Drop a deleted object's locks (kept otherwise: a few bytes per object)."""
        for key in [k for k in self._locks if k[1:] == (namespace, name)]:
            if not self._locks[key].locked():
                del self._locks[key]
