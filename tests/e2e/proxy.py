"""A TCP proxy in front of PostgreSQL that a test can cut and restore: a database outage
as the services see it (connections reset, new ones refused); or that loses one write's
answer (the server commits, the client's connection is reset before it hears so)."""

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit


class DatabaseProxy:
    def __init__(self, server_url: str) -> None:
        self._server_url = server_url
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lose_answer_to: bytes | None = None
        self._skip = 0
        self.port = 0
        # How many answers were lost: a test checks that its fault fired.
        self.answers_lost = 0

    def url_for(self, database: str) -> str:
        """A URL of `database` that goes through this proxy."""
        parts = urlsplit(self._server_url)
        user = parts.username or "postgres"
        password = f":{parts.password}" if parts.password else ""
        netloc = f"{user}{password}@127.0.0.1:{self.port}"
        return urlunsplit(("postgresql", netloc, f"/{database}", "", ""))

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self._server_url)
        socket_dir = parse_qs(parts.query).get("host", [None])[0]
        if socket_dir:
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.5432")
        return await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 5432)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def lose_answer_to(self, marker: bytes, *, skip: int = 0) -> None:
        """The next bytes a client sends that contain `marker` (say a parameter of a Bind
        message), after `skip` such sends have passed, reach the server; once the server
        answers, the answer is dropped and that client's connection reset: the server
        completed the statement, the client never hears so."""
        self._lose_answer_to = marker
        self._skip = skip

    @property
    def armed(self) -> bool:
        """Whether a fault set by `lose_answer_to` is still waiting for its statement."""
        return self._lose_answer_to is not None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        answer_lost = asyncio.Event()

        async def to_server() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await reader.read(65536):
                    marked = self._lose_answer_to is not None and self._lose_answer_to in data
                    if marked and self._skip:
                        self._skip -= 1
                    elif marked:
                        self._lose_answer_to = None
                        self.answers_lost += 1
                        answer_lost.set()
                        up_writer.write(data)
                        return  # the client's connection is reset once the answer comes
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.transport.abort()

        async def to_client() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while (data := await up_reader.read(65536)) and not answer_lost.is_set():
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()
            up_writer.transport.abort()

        await asyncio.gather(to_server(), to_client())
        self._writers -= {writer, up_writer}
