"""Coalesces bursts of child events into one reconcile pass per owner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

Key = tuple[str, str]


class Debouncer:
    """`request(key)` runs `action(*key)` once, `delay` seconds after the first request
    of a burst; requests arriving meanwhile join that run."""

    def __init__(self, delay: float, action: Callable[[str, str], Awaitable[object]]) -> None:
        self.delay = delay
        self._action = action
        self._pending: dict[Key, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # pending and running

    def request(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        if key not in self._pending:
            task = asyncio.create_task(self._run(key), name=f"debounce {key}")
            self._pending[key] = task
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def request_after(self, namespace: str, name: str, seconds: float) -> None:
        """A request `seconds` from now (a pass that is due then, e.g. a rotation's next
        step); an earlier request does not cancel it."""

        async def later() -> None:
            await asyncio.sleep(seconds)
            self.request(namespace, name)

        task = asyncio.create_task(later(), name=f"debounce {namespace}/{name} later")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: Key) -> None:
        try:
            await asyncio.sleep(self.delay)
        finally:
            self._pending.pop(key, None)
        try:
            await self._action(*key)
        except Exception:
            # The slow timer retries; a child event must never take the operator down.
            logger.exception("reconcile of %s/%s after a child event failed", *key)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
