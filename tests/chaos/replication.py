"""A PostgreSQL primary and its synchronous streaming standby (from pgserver's binaries) on two
ports of 127.0.0.1 kept through failovers, so one multi-host URL (`url()`) names the
cluster for good. A promoted standby runs alone until `rebuild_standby`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.chaos.postgres import PgBinaries
from tests.e2e.containers import free_port

DATABASE = "exchange"
# The standby's name in its primary_conninfo, which the primary's synchronous_standby_names
# waits for.
STANDBY_NAME = "standby"


@dataclass
class Node:
    name: str
    port: int
    data: Path
    log: Path

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


class ReplicatedCluster:
    def __init__(self) -> None:
        self.pg = PgBinaries("exchange-replication-", "commands.out")
        self.root = self.pg.root
        self.nodes = [
            Node(name, free_port(), self.root / name, self.root / f"{name}.log")
            for name in ("a", "b")
        ]
        self.primary = self.nodes[0]
        self.standby: Node | None = None

    def url(self, database: str = DATABASE) -> str:
        """Both nodes, the writable one chosen by the client (libpq's and asyncpg's form)."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgresql://postgres@{hosts}/{database}?target_session_attrs=read-write"

    async def start(self) -> None:
        await self.pg.initdb(self.primary.data)
        await self._start(self.primary)
        conn = await asyncpg.connect(self.primary.url("postgres"))
        try:
            await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()
        await self.rebuild_standby()

    async def rebuild_standby(self) -> None:
        """The node that is not the primary becomes its synchronous standby: a base backup
        (`pg_basebackup -R` writes primary_conninfo with the standby's application_name),
        started on the node's port; then the primary waits for it at each commit. Returns
        once the standby has every commit the primary has acknowledged."""
        node = next(n for n in self.nodes if n is not self.primary)
        if (node.data / "postmaster.pid").exists():
            await self._kill(node)
        shutil.rmtree(node.data, ignore_errors=True)
        source = (
            f"host=127.0.0.1 port={self.primary.port} user=postgres application_name={STANDBY_NAME}"
        )
        await self._run(
            "pg_basebackup", "-D", str(node.data), "-d", source,
            "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip
        _drop_synchronous_standby_names(node.data / "postgresql.auto.conf")
        await self._start(node)
        self.standby = node
        conn = await asyncpg.connect(self.primary.url("postgres"))
        try:
            await conn.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
            await conn.execute("SELECT pg_reload_conf()")
            for _ in range(600):
                state = await conn.fetchval(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                    STANDBY_NAME,
                )
                if state == "sync":
                    break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"the standby did not become synchronous:\n{self.logs(node)}")
            # A commit now waits for the standby, so it then has everything before it too.
            await conn.execute("CREATE TABLE IF NOT EXISTS replication_probe (at timestamptz)")
            await conn.execute("INSERT INTO replication_probe VALUES (now())")
        finally:
            await conn.close()

    async def kill_primary(self) -> Node:
        """SIGKILL the primary's postmaster and every process it started, at once; returns
        once its port refuses connections."""
        node = self.primary
        await self._kill(node)
        return node

    async def promote(self) -> Node:
        assert self.standby is not None, "no standby to promote"
        node = self.standby
        await self._run("pg_ctl", "promote", "-w", "-t", "60", "-D", str(node.data))
        conn = await asyncpg.connect(node.url("postgres"))
        try:
            assert not await conn.fetchval("SELECT pg_is_in_recovery()")
        finally:
            await conn.close()
        self.primary, self.standby = node, None
        return node

    def logs(self, node: Node) -> str:
        return node.log.read_text(errors="replace")[-3000:] if node.log.exists() else ""

    async def close(self) -> None:
        for node in self.nodes:
            if (node.data / "postmaster.pid").exists():
                with contextlib.suppress(RuntimeError):
                    await self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(node.data))
        self.pg.close()

    # -- processes --------------------------------------------------------------------------

    async def _start(self, node: Node) -> None:
        try:
            await self.pg.start(node.data, node.port, node.log)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\nnode {node.name}'s log:\n{self.logs(node)}") from exc

    async def _kill(self, node: Node) -> None:
        # Every process of the server at once, as a machine dying would: the postmaster is
        # stopped first (it forks no more), then its children (each backend, walsender and
        # worker leads a process group of its own, so killing the postmaster's group would
        # leave them serving their connections a moment longer), then all are killed.
        pid = int((node.data / "postmaster.pid").read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
        processes = [pid, *_children(pid)]
        for each in processes[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGSTOP)
        for each in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _accepts_connections(node.port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {node.name} still listens after SIGKILL")
            await asyncio.sleep(0.02)
        # A dead postmaster's lock files stay; one whose process is a zombie not yet reaped
        # (here nobody may reap it soon) looks alive to the next server on that port.
        (node.data / "postmaster.pid").unlink(missing_ok=True)
        (self.root / f".s.PGSQL.{node.port}.lock").unlink(missing_ok=True)
        (self.root / f".s.PGSQL.{node.port}").unlink(missing_ok=True)

    async def _run(self, *args: str) -> None:
        await self.pg.run(*args)


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _accepts_connections(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _drop_synchronous_standby_names(auto_conf: Path) -> None:
    """A standby promoted with its former primary's synchronous_standby_names would wait
    for a standby of its own at every commit: it starts without them."""
    lines = auto_conf.read_text().splitlines(keepends=True)
    auto_conf.write_text(
        "".join(line for line in lines if not line.startswith("synchronous_standby_names"))
    )
