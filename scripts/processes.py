"""Starting a service as a real process and waiting until it serves (for `make run` and tests)."""

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


class ServiceProcess:
    """One service started with `python -m`, logging JSON lines to a file."""

    def __init__(
        self,
        module: str,
        env: dict[str, str],
        log_path: Path,
        python: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        """`python` and `cwd`: another installation's interpreter, and a folder that does
        not hold this checkout's packages (`-m` imports from the working directory first)."""
        self.module = module
        self.env = env
        self.log_path = log_path
        self.python = str(python) if python else sys.executable
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.metrics_port = 0

    async def start(self) -> int:
        """Start and wait until it logs that it serves; returns the bound port."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            # Popen only forks; waiting for readiness below is asynchronous.
            self.process = subprocess.Popen(  # noqa: ASYNC220
                [self.python, "-m", self.module],
                env=self.env,
                stdout=log,
                stderr=log,
                cwd=self.cwd,
            )
        for _ in range(300):
            for line in self.log_path.read_bytes()[offset:].decode(errors="replace").splitlines():
                if '"event": "metrics"' in line:
                    self.metrics_port = int(json.loads(line)["port"])
                if '"event": "serving"' in line:
                    self.port = int(json.loads(line)["port"])
                    return self.port
            if self.process.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.module} did not start:\n{self.logs()}")

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal the process and wait for it without blocking the event loop (which may
        be serving what the process needs to shut down). Kills it after 20 s."""
        assert self.process is not None
        self.process.send_signal(sig)
        for _ in range(400):
            code = self.process.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        self.process.kill()
        raise TimeoutError(f"{self.module} did not stop in 20 s:\n{self.logs()[-3000:]}")

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def freeze(self) -> None:
        """SIGSTOP: connections are accepted by the kernel, nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    async def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def stop_all(processes: Iterable[ServiceProcess]) -> None:
    """Stop every process still running, all at once, so that one that has to be killed
    does not leave the others running; then raise its error, if any."""
    running = [p for p in processes if p.process is not None and p.process.poll() is None]
    outcomes = await asyncio.gather(*(p.stop() for p in running), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
