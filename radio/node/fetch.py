"""A lean HTTP/1.1 GET client for a simulated fleet: keep-alive connections shared by many nodes of one process.

A real node downloads one file now and then with httpx. A simulated fleet downloads the same file a thousand
times at once on one core, where httpx's per-request machinery (~2-4 ms of CPU: anyio locks, httpcore's pool)
made the downloads, not the service, the bottleneck. Every node still makes its own GET over TCP to the real
service and gets the whole body, which it verifies and stores itself; only the client library is leaner.

Plain ``http://`` only (the fleet's service is local); errors are ``OSError`` (``ConnectionError``,
``TimeoutError``, :class:`HTTPStatusError`), which the agent retries like httpx's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from urllib.parse import urlsplit


class HTTPStatusError(OSError):
    """The server answered, but not 200."""


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class LeanHttp:
    """``await LeanHttp(connections).get(url)`` → the body of a 200 answer; at most ``connections`` at once."""

    def __init__(self, connections: int = 16, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s
        self._slots = asyncio.Semaphore(connections)
        self._idle: dict[tuple[str, int], deque[Connection]] = {}

    async def get(self, url: str) -> bytes:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"LeanHttp fetches plain http:// URLs only, not {url!r}")
        host, port = parts.hostname, parts.port or 80
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        request = (f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept-Encoding: identity\r\n"
                   f"User-Agent: radio-node-sim\r\n\r\n").encode()
        async with self._slots, asyncio.timeout(self.timeout_s):
            idle = self._idle.setdefault((host, port), deque())
            while True:
                reused = bool(idle)
                conn = idle.pop() if reused else await asyncio.open_connection(host, port)
                try:
                    status, body, keep = await _exchange(conn, request)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    conn[1].close()
                    if reused:  # a kept-alive connection the server closed meanwhile: try a fresh one
                        continue
                    raise ConnectionError(f"the server closed the connection ({exc})") from None
                except (asyncio.LimitOverrunError, ValueError) as exc:
                    conn[1].close()
                    raise ConnectionError(f"not a valid HTTP answer ({exc})") from None
                except BaseException:  # cancelled, or timed out mid-answer
                    conn[1].close()
                    raise
                if keep:
                    idle.append(conn)
                else:
                    conn[1].close()
                if status != "200":
                    raise HTTPStatusError(f"HTTP {status} for {url}")
                return body

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                writer = idle.pop()[1]
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()


async def _exchange(conn: Connection, request: bytes) -> tuple[str, bytes, bool]:
    """One request on one connection: (status code, body, whether the connection may be reused)."""
    reader, writer = conn
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or not status[0].startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    keep = status[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # delimited by the end of the connection
        body, keep = await reader.read(), False
    return status[1], body, keep


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)
