"""The fleet's lean HTTP client against a real TCP server: keep-alive reuse, chunked bodies, closes, errors."""

from __future__ import annotations

import asyncio

import pytest

from radio.node.fetch import HTTPStatusError, LeanHttp

BODY = bytes(range(256)) * 300


class Server:
    """A tiny HTTP/1.1 server on loopback; ``mode`` picks how it answers; counts connections and requests."""

    def __init__(self) -> None:
        self.mode = "length"
        self.connections = 0
        self.requests = 0
        self.server: asyncio.base_events.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()
        await asyncio.sleep(0.05)  # let both ends of every connection finish closing

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests += 1
                path = head.split(b" ")[1].decode()
                if path == "/missing":
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
                elif self.mode == "chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for i in range(0, len(BODY), 10_000):
                        part = BODY[i:i + 10_000]
                        writer.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    writer.write(b"0\r\n\r\n")
                elif self.mode == "close":
                    writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY)
                    await writer.drain()
                    writer.close()
                    return
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(BODY) + BODY)
                await writer.drain()
                if self.mode == "drop-after":  # answers once, then closes the kept-alive connection
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def test_many_gets_share_few_kept_alive_connections_and_get_whole_bodies() -> None:
    async def main() -> None:
        server = Server()
        port = await server.start()
        client = LeanHttp(connections=4)
        bodies = await asyncio.gather(*(client.get(f"http://127.0.0.1:{port}/a.mp3") for _ in range(40)))
        assert all(b == BODY for b in bodies)
        assert server.requests == 40 and server.connections <= 4
        server.mode = "chunked"
        assert await client.get(f"http://127.0.0.1:{port}/a.mp3") == BODY
        server.mode = "close"
        assert await client.get(f"http://127.0.0.1:{port}/a.mp3") == BODY
        with pytest.raises(HTTPStatusError, match="404"):
            await client.get(f"http://127.0.0.1:{port}/missing")
        await client.aclose()
        await server.stop()

    asyncio.run(main())


def test_a_connection_closed_by_the_server_is_replaced_and_an_unreachable_server_is_an_os_error() -> None:
    async def main() -> None:
        server = Server()
        server.mode = "drop-after"
        port = await server.start()
        client = LeanHttp(connections=1)
        for _ in range(3):  # each time the kept connection turns out closed: a fresh one, no error
            assert await client.get(f"http://127.0.0.1:{port}/a.mp3") == BODY
        assert server.connections == 3
        await server.stop()
        with pytest.raises(OSError):
            await client.get(f"http://127.0.0.1:{port}/a.mp3")
        await client.aclose()

    asyncio.run(main())
