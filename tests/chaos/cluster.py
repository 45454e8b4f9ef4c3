"""The chaos run's own PostgreSQL, which it restarts or crashes at will."""

import contextlib

from tests.chaos.postgres import PgBinaries
from tests.e2e.containers import free_port


class PostgresCluster:
    def __init__(self) -> None:
        self.pg = PgBinaries("exchange-chaos-pg-", "pg_ctl.out")
        self.root = self.pg.root
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _run(self, *args: str) -> None:
        await self.pg.run(*args, tail=lambda: self.logs()[-3000:])

    async def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            await self.pg.initdb(self.data)
        await self.pg.start(self.data, self.port, self.log, tail=lambda: self.logs()[-3000:])

    async def restart(self) -> None:
        await self._run(
            "pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", str(self.data),
            "-l", str(self.log),
        )  # fmt: skip

    async def crash(self) -> None:
        """Stop without a shutdown checkpoint (as a crash would); `start` recovers from WAL."""
        await self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    async def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            await self.stop()
        self.pg.close()
