"""The chaos run's own PostgreSQL cluster, from the binaries the `pgserver` package ships (a
dev dependency), so the run works wherever `make test` does and can restart or crash the
server at will."""

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """A PostgreSQL cluster of the test's own, from pgserver's binaries, on a free TCP port
    of 127.0.0.1 with trust authentication, in a temporary directory removed on close."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # pgserver's lock file lives in the runtime dir; falling back to /tmp is fine.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="exchange-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        # PostgreSQL refuses to run as root; run it as the user pgserver itself uses then.
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = _as_system_user("pgserver", self.bin, self.root)
        # pg_ctl detaches the server from this process: never leave it behind.
        atexit.register(self._stop_at_exit)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _run(self, *args: str) -> None:
        output = self.root / "pg_ctl.out"

        def run() -> None:
            # Never a pipe: the server inherits pg_ctl's output and would keep it open.
            with output.open("ab") as out:
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
            raise RuntimeError(f"{args[0]} failed: {exc}\n{self.logs()[-3000:]}") from exc

    async def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            await self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            # Only processes crash here, never the machine: no need to wait for the disk.
            "-c fsync=off -c max_connections=200"
        )
        await self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
            "-o", options,
        )  # fmt: skip

    async def restart(self) -> None:
        """A clean restart: clients are disconnected, the server comes back at once."""
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
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        if (self.data / "postmaster.pid").exists():
            pg_ctl = [str(self.bin / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data)]
            subprocess.run([*self._as_user, *pg_ctl], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_system_user(user: str, bin_dir: Path, root: Path) -> list[str]:
    """What pgserver does before it runs PostgreSQL as root: the user exists and can reach
    the binaries; here it also owns the cluster's directory. Returns a command prefix that
    runs a program as that user.

    Not `subprocess.run(user=...)`: that forks this process, whose gRPC threads make the
    child crash now and then (gRPC's fork handlers); a plain spawn of a small trampoline
    does not fork them."""
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
