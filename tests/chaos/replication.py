"""A PostgreSQL primary and its synchronous streaming standby, from pgserver's binaries (a dev
dependency), on two ports of 127.0.0.1 kept through failovers, so one multi-host URL
(`url()`) names the cluster for good; a promoted standby runs alone until `rebuild_standby`.
The chaos run uses the primary alone, restarted or crashed at will."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from tests.e2e.containers import free_port

DATABASE = "exchange"
# The standby's name in its primary_conninfo, which the primary's synchronous_standby_names
# waits for.
STANDBY_NAME = "standby"


class PgBinaries:
    """pgserver's binaries and a temporary `root`; as root, run as pgserver's user
    (PostgreSQL refuses root). Servers still running under `root` at exit are stopped."""

    def __init__(self, prefix: str, output: str) -> None:
        with warnings.catch_warnings():
            # pgserver's lock file lives in the runtime dir; falling back to /tmp is fine.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.output = self.root / output
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = _as_system_user("pgserver", self.bin, self.root)
        atexit.register(self._stop_at_exit)

    async def run(self, *args: str) -> None:

        def run() -> None:
            # Never a pipe: the server inherits pg_ctl's output and would keep it open.
            with self.output.open("ab") as out:
                subprocess.run(
                    [*self._as_user, str(self.bin / args[0]), *args[1:]],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd=self.root,
                    timeout=90,
                )

        try:
            await asyncio.to_thread(run)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            text = self.output.read_text(errors="replace")[-2000:] if self.output.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {exc}\n{text}") from exc

    async def initdb(self, data: Path) -> None:
        await self.run(
            "initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
            "--no-locale", "--no-sync",
        )  # fmt: skip

    async def start(self, data: Path, port: int, log: Path) -> None:
        """`fsync=off`: only processes crash here, never the machine."""
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=200"
        )
        await self.run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(log), "-o", options,
        )  # fmt: skip

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        for pid_file in sorted(self.root.glob("*/postmaster.pid")):
            stop = ["stop", "-m", "immediate", "-D", str(pid_file.parent)]
            pg_ctl = [*self._as_user, str(self.bin / "pg_ctl"), *stop]
            subprocess.run(pg_ctl, capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_system_user(user: str, bin_dir: Path, root: Path) -> list[str]:
    """A command prefix that runs a program as `user` (prepared as pgserver does). Not
    `subprocess.run(user=...)`: that forks this process, whose gRPC threads make the child
    crash now and then; a spawned trampoline does not."""
    import pwd

    from pgserver import utils

    helpers: Any = utils
    helpers.ensure_user_exists(user)
    helpers.ensure_prefix_permissions(bin_dir)
    helpers.ensure_folder_permissions(bin_dir, 0o555)
    helpers.ensure_folder_permissions(bin_dir.parent / "lib", 0o444)
    helpers.ensure_folder_permissions(bin_dir.parent / "share", 0o444)
    entry = pwd.getpwnam(user)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    trampoline = (
        "import os, sys; os.setgroups([]); "
        f"os.setgid({entry.pw_gid}); os.setuid({entry.pw_uid}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", trampoline]


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

    async def start(self, standby: bool = True) -> None:
        await self.pg.initdb(self.primary.data)
        await self._start(self.primary)
        conn = await asyncpg.connect(self.primary.url("postgres"))
        try:
            await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()
        if standby:
            await self.rebuild_standby()

    async def restart_primary(self, crash: bool, pause: float = 0.0) -> None:
        """A clean restart (clients disconnected, back at once), or a crash: a stop without a
        shutdown checkpoint, `pause`, and a start that recovers from WAL."""
        data, log = str(self.primary.data), str(self.primary.log)
        if not crash:
            await self._run(
                "pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", data, "-l", log
            )
            return
        await self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", data)
        await asyncio.sleep(pause)
        await self._start(self.primary)

    async def rebuild_standby(self) -> None:
        """The node that is not the primary becomes its synchronous standby (a base backup on
        its port); returns once it has every commit the primary acknowledged."""
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
        """Every process of the primary at once; returns once its port refuses connections."""
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
        processes = [pid, *children(pid)]
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


def children(pid: int) -> list[int]:
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
    """A promoted standby would otherwise wait for a standby of its own at every commit."""
    lines = auto_conf.read_text().splitlines(keepends=True)
    auto_conf.write_text(
        "".join(line for line in lines if not line.startswith("synchronous_standby_names"))
    )
