"""A reverse proxy in front of a real registry that injects faults on request.

Tests queue faults (an HTTP status with optional Retry-After, a dropped connection, a
delay, a tampered body) for requests whose path contains a given text; every other
request is forwarded to the registry untouched. It counts requests and the most that
were in flight at once. It runs on the test's own event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
from aiohttp import web

from testbed.cluster import free_port

# Headers a registry client reads; everything else is left out of forwarded answers.
_PASSED_BACK = (
    "Content-Type",
    "Docker-Content-Digest",
    "Docker-Distribution-Api-Version",
    "Link",
    "Location",
    "Retry-After",
    "WWW-Authenticate",
)


@dataclass
class Fault:
    kind: Literal["status", "drop", "delay", "tamper"] = "status"
    path_contains: str = ""
    status: int = 503
    retry_after: str | None = None
    delay: float = 0.0


@dataclass
class FaultProxy:
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    injected: list[Fault] = field(default_factory=list)
    max_in_flight: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._in_flight = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, times: int = 1, **fault: object) -> None:
        """Queue `times` identical faults, e.g. fail(2, status=503, path_contains="/tags")."""
        self.faults.extend(Fault(**fault) for _ in range(times))  # type: ignore[arg-type]

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _take_fault(self, path: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.path_contains in path:
                self.injected.append(fault)
                return self.faults.pop(index)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            fault = self._take_fault(request.path_qs)
            if fault is not None and fault.kind == "status":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return web.json_response(
                    {"errors": [{"code": "UNAVAILABLE", "message": "injected fault"}]},
                    status=fault.status,
                    headers=headers,
                )
            if fault is not None and fault.kind == "drop":
                assert request.transport is not None
                request.transport.close()  # the client sees the connection drop
                return web.Response()
            if fault is not None and fault.kind == "delay":
                await asyncio.sleep(fault.delay)
            return await self._forward(request, tamper=fault is not None and fault.kind == "tamper")
        finally:
            self._in_flight -= 1

    async def _forward(self, request: web.Request, *, tamper: bool) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k in ("Accept", "Authorization")}
        async with self._session.request(
            request.method,
            self.upstream.rstrip("/") + request.path_qs,
            headers=headers,
            data=await request.read() if request.can_read_body else None,
            allow_redirects=False,
        ) as upstream:
            body = await upstream.read()
            passed = {k: v for k, v in upstream.headers.items() if k in _PASSED_BACK}
            if tamper and body:
                body = body.replace(b"{", b"{ ", 1)  # same JSON, other bytes, other digest
            response = web.Response(status=upstream.status, body=body, headers=passed)
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                response.headers["Content-Length"] = upstream.headers["Content-Length"]
            return response
