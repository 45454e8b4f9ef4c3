"""The services as containers of the image `make test-containers` built (E2E_CONTAINERS=1):
one pair of containers per test, on the compose stack's network and its PostgreSQL, each with
the test's settings, driven through the engine (docker CLI) as an operator would."""

import asyncio
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Inside the image both services listen on their default ports, on every interface of the
# container; the host reaches them through ports published on loopback only.
GRPC_PORTS = {"order_service": 50051, "wallet_pool_service": 50052}
METRICS_PORTS = {"order_service": 9451, "wallet_pool_service": 9452}
ADDRESS_SETTINGS = {
    "order_service": ("ORDER_SERVICE_ADDR", "ORDER_METRICS_ADDR"),
    "wallet_pool_service": ("WALLET_POOL_SERVICE_ADDR", "WALLET_POOL_METRICS_ADDR"),
}
LABEL = "exchange.e2e"
STOP_GRACE_SECONDS = 20


def enabled() -> bool:
    return os.environ.get("E2E_CONTAINERS") == "1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def in_network(database_url: str) -> str:
    """The URL the containers use for a database the host reaches at `database_url`: the
    same database on the stack's PostgreSQL, by its name on the compose network."""
    parts = urlsplit(database_url)
    credentials = parts.netloc.rpartition("@")[0]
    host = os.environ.get("E2E_POSTGRES_HOST", "postgres:5432")
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}" if credentials else host))


async def docker(*args: str, check: bool = True) -> str:
    process = await asyncio.create_subprocess_exec(
        "docker", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if check and process.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace").strip()


class ContainerService:
    """One service in a container; the same interface as scripts.processes.ServiceProcess
    (start, stop, kill, freeze, thaw, running, logs, port, metrics_port)."""

    def __init__(
        self,
        module: str,
        settings: dict[str, str],
        name: str,
        log_path: Path,
        alias: str | None = None,
    ) -> None:
        """`log_path`: where the engine's log of the container is copied as it is written;
        `alias`: a name on the network shared with other replicas (DNS answers with all)."""
        self.module = module
        self.name = name
        self.log_path = log_path
        self.alias = alias
        self._follower: asyncio.subprocess.Process | None = None
        grpc_setting, metrics_setting = ADDRESS_SETTINGS[module]
        # The other service's addresses stay out, as in compose (the image's health check
        # finds its service's address by name).
        others = {name for m, names in ADDRESS_SETTINGS.items() if m != module for name in names}
        self.env = {
            **{key: value for key, value in settings.items() if key not in others},
            grpc_setting: f"0.0.0.0:{GRPC_PORTS[module]}",
            metrics_setting: f"0.0.0.0:{METRICS_PORTS[module]}",
        }
        self.port = free_port()
        self.metrics_port = free_port()
        self._created = False

    def _run_args(self) -> list[str]:
        env_args = [a for key, value in self.env.items() for a in ("--env", f"{key}={value}")]
        return [
            "run", "--detach", "--name", self.name, "--label", LABEL,
            "--network", os.environ.get("E2E_NETWORK", "exchange-e2e_default"),
            *(["--network-alias", self.alias] if self.alias else []),
            # As production runs it: read-only root file system, the image's non-root user.
            "--read-only", "--tmpfs", "/tmp",
            "--publish", f"127.0.0.1:{self.port}:{GRPC_PORTS[self.module]}",
            "--publish", f"127.0.0.1:{self.metrics_port}:{METRICS_PORTS[self.module]}",
            "--stop-timeout", str(STOP_GRACE_SECONDS),
            # The image's health check, less often: dozens of these run on two cores.
            "--health-interval", "30s",
            *env_args,
            os.environ.get("E2E_IMAGE", "exchange-local/app:e2e"),
            "python", "-m", self.module,
        ]  # fmt: skip

    async def start(self) -> int:
        """Create (or start again) and wait until it logs that it serves; returns the host
        port its gRPC port is published on."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        if self._created:
            await docker("start", self.name)
        else:
            await self._run()
            self._created = True
        await self._follow_log()
        for _ in range(600):
            if '"event": "serving"' in self.logs()[offset:]:
                return self.port
            if self._follower is not None and self._follower.returncode is not None:
                break  # the container stopped: its log is complete
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.module} did not start in its container:\n{self.logs()}")

    async def _run(self) -> None:
        """Create and start the container. A host port free when chosen may be taken before
        the engine binds it (other suites on the machine): then new ports, once or more."""
        for attempt in range(5):
            try:
                await docker(*self._run_args())
                return
            except RuntimeError as exc:
                taken = ("port is already allocated", "address already in use")
                if not any(words in str(exc) for words in taken) or attempt == 4:
                    raise
            await docker("rm", "--force", self.name, check=False)
            self.port, self.metrics_port = free_port(), free_port()

    async def _follow_log(self) -> None:
        """One `docker logs --follow` per run of the container copies its log into
        `log_path` (reading it is then as cheap as a process's log file); this run's lines
        only, since a restarted container's log holds the earlier runs too."""
        since = await docker("inspect", "--format", "{{.State.StartedAt}}", self.name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._follower = await asyncio.create_subprocess_exec(
                "docker", "logs", "--follow", "--since", since, self.name,
                stdout=log, stderr=log,
            )  # fmt: skip

    async def _log_complete(self) -> None:
        """Once the container stopped: its follower has copied the last lines."""
        if self._follower is None:
            return
        try:
            async with asyncio.timeout(10):
                await self._follower.wait()
        except TimeoutError:
            self._follower.kill()
            await self._follower.wait()

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """`docker stop` (SIGTERM, then SIGKILL after the grace period) or `docker kill`
        with another signal; returns the exit status."""
        if sig == signal.SIGTERM:
            await docker("stop", "--time", str(STOP_GRACE_SECONDS), self.name)
        else:
            await docker("kill", "--signal", sig.name, self.name)
        code = int(await docker("wait", self.name))
        await self._log_complete()
        return code

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)

    async def freeze(self) -> None:
        """Every process of the container stops being scheduled (cgroup freezer): connections
        are accepted by the kernel, nothing answers."""
        await docker("pause", self.name)

    async def thaw(self) -> None:
        await docker("unpause", self.name)

    def running(self) -> bool:
        state = subprocess.run(
            ["docker", "inspect", "--format", "{{.State.Running}}", self.name],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return state.stdout.strip() == "true"

    def logs(self) -> str:
        """What the service wrote (its stdout and stderr), as the engine gave it."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def remove(self) -> None:
        if self._created:
            await docker("rm", "--force", "--volumes", self.name, check=False)
            await self._log_complete()


def container_name(module: str) -> str:
    return f"e2e-{uuid.uuid4().hex[:10]}-{module.replace('_', '-')}"


def pool_target(pool: ContainerService) -> str:
    """The order service's target: one pool container, or every replica behind its alias
    (the channel balances over what DNS answers)."""
    return f"dns:///{pool.alias or pool.name}:{GRPC_PORTS[pool.module]}"


async def remove_all(services: "Sequence[ContainerService]") -> None:
    await asyncio.gather(*(service.remove() for service in services))


async def restart_postgres() -> None:
    """`docker restart` of the stack's PostgreSQL; waits until it accepts connections."""
    name = os.environ.get("E2E_POSTGRES_CONTAINER", "exchange-e2e-postgres-1")
    await docker("restart", "--time", "20", name)
    for _ in range(300):
        if await _accepts(name):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{name} did not come back")


async def _accepts(name: str) -> bool:
    process = await asyncio.create_subprocess_exec(
        "docker", "exec", name, "pg_isready", "-q",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    return await process.wait() == 0
