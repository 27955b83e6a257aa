"""A small HTTP/1.1 keep-alive client on asyncio, with httptools parsing the responses.

The load generator shares two cores with the servers it measures, so the client must cost
far less per request than the server does: a general-purpose client spends more CPU per
request than the bare endpoint it is compared with, and the benchmark would then measure
the client. This one writes pre-built request bytes and parses answers in C; one request
at a time per connection (no pipelining), connections reused until the server closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import httptools

IDLE_LIMIT = 3.0


class HttpError(Exception):
    """The request got no complete answer: refused, reset, timed out or unparseable."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    keep_alive: bool


def build_request(
    method: str, path: str, host: str, headers: Mapping[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.last_used = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports do not subclass asyncio.Transport, but behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpError(f"connection lost: {exc or 'closed by the server'}"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"unparseable response: {exc}"))
            self.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        response = Response(
            self.parser.get_status_code(), b"".join(self.body), self.parser.should_keep_alive()
        )
        self.body = []
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(response)

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def exchange(self, request: bytes) -> Response:
        if self.closed or self.transport is None:
            raise HttpError("connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.waiter


class ConnectionPool:
    """Up to ``max_connections`` keep-alive connections to one host; callers queue beyond."""

    def __init__(
        self, host: str, port: int, *, max_connections: int = 256, request_timeout: float = 10.0
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        self.host = host
        self.port = port
        self.authority = f"{host}:{port}"
        self.request_timeout = request_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: deque[_Protocol] = deque()
        self.opened = 0

    @classmethod
    def for_url(
        cls, base_url: str, *, max_connections: int = 256, request_timeout: float = 10.0
    ) -> ConnectionPool:
        scheme, _, rest = base_url.partition("://")
        if scheme != "http" or not rest:
            raise ValueError(f"only plain http:// URLs are supported, not {base_url!r}")
        host, _, port = rest.rstrip("/").partition(":")
        return cls(
            host, int(port or 80), max_connections=max_connections, request_timeout=request_timeout
        )

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await loop.create_connection(_Protocol, self.host, self.port)
        except OSError as exc:
            raise HttpError(f"cannot connect to {self.authority}: {exc}") from exc
        self.opened += 1
        return protocol

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes = b"",
    ) -> Response:
        data = build_request(method, path, self.authority, headers, body)
        async with self._slots:
            connection = self._take_idle() or await self._connect()
            try:
                async with asyncio.timeout(self.request_timeout):
                    response = await connection.exchange(data)
            except TimeoutError as exc:
                connection.close()
                raise HttpError(f"no answer within {self.request_timeout} s") from exc
            except BaseException:
                connection.close()
                raise
            if response.keep_alive and not connection.closed:
                connection.last_used = asyncio.get_running_loop().time()
                self._idle.append(connection)
            else:
                connection.close()
            return response

    def _take_idle(self) -> _Protocol | None:
        # Servers close idle keep-alive connections (uvicorn after 5 s); a request written
        # into one that is being closed would fail without reaching the server, so
        # connections idle for longer than IDLE_LIMIT are dropped instead of reused.
        stale_before = asyncio.get_running_loop().time() - IDLE_LIMIT
        while self._idle and self._idle[0].last_used < stale_before:
            self._idle.popleft().close()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:
                return connection
        return None

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)
