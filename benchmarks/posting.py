"""A lean HTTP/1.1 client for the benchmarks' offered load.

The load generator shares the machine's two cores with the nodes it loads: every millisecond of CPU it spends on a
request is taken from them, and at 500 posts a second aiohttp (0.37–0.39 ms a request here) took a fifth of a core.
An officer's application runs on another machine. This client spends less: it keeps up to ``connections`` HTTP/1.1
connections open (no pipelining, one request at a time on each, as a browser or aiohttp does), writes each request
from bytes built before the clock starts, and reads the status line, the headers and a ``Content-Length`` body.
Anything else (a chunked answer, a closed connection, a malformed status line) raises :class:`PostingError` and the
connection is dropped; the next request opens a new one. A connection the server closed, or one left unused for
``keep_alive_s`` (below uvicorn's 5 s, after which the server closes it, perhaps as a request arrives), is not used
again: a post is never sent on a connection that may be closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class PostingError(Exception):
    """A request that got no complete HTTP/1.1 answer."""


class Poster:
    """Up to ``connections`` keep-alive connections to one host, for requests built as bytes beforehand."""

    def __init__(
        self, host: str, port: int, connections: int, timeout_s: float = 30.0, keep_alive_s: float = 4.0
    ) -> None:
        self.host, self.port, self.timeout_s, self.keep_alive_s = host, port, timeout_s, keep_alive_s
        self._idle: list[tuple[Connection, float]] = []  # with the time each was last used
        self._slots = asyncio.Semaphore(connections)
        self._open: set[asyncio.StreamWriter] = set()

    def request(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
        """The bytes of one request with a body (built before the clock starts)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one request built by :meth:`request`; its status and body."""
        async with self._slots:
            connection = self._reusable() or await self._connect()
            try:
                async with asyncio.timeout(self.timeout_s):
                    status, body, keep = await self._exchange(connection, request)
            except BaseException:
                self._drop(connection)
                raise
            if keep:
                self._idle.append((connection, time.monotonic()))
            else:
                self._drop(connection)
            return status, body

    async def close(self) -> None:
        for writer in list(self._open):
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._open.clear()
        self._idle.clear()

    def _reusable(self) -> Connection | None:
        """The connection used last that is still open and was used within ``keep_alive_s``; the others dropped."""
        while self._idle:
            connection, used = self._idle.pop()
            if connection[0].at_eof() or connection[1].is_closing() or time.monotonic() - used >= self.keep_alive_s:
                self._drop(connection)
                continue
            return connection
        return None

    async def _connect(self) -> Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._open.add(writer)
        return reader, writer

    def _drop(self, connection: Connection) -> None:
        writer = connection[1]
        self._open.discard(writer)
        writer.close()

    @staticmethod
    async def _exchange(connection: Connection, request: bytes) -> tuple[int, bytes, bool]:
        reader, writer = connection
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            raise PostingError("the server closed the connection before answering") from exc
        status_line, _, header_block = head.partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise PostingError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        length, keep = None, True
        for header in header_block.split(b"\r\n"):
            name, _, value = header.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise PostingError("a chunked answer (this client reads Content-Length bodies only)")
            elif name == b"connection" and value.strip().lower() == b"close":
                keep = False
        if length is None:
            raise PostingError("an answer without Content-Length")
        try:
            body = await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as exc:
            raise PostingError("the server closed the connection within its answer") from exc
        return int(parts[1]), body, keep
