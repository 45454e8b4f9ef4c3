"""A released version of the services, runnable beside this checkout: its files exported from
git, installed as the image installs it (from its own lock, checked against its hashes, then
the project without dependencies) into a virtual environment of its own, once per commit
under .data/releases/.

The previous release is the commit that cut the released contract (protos/released.binpb);
UPGRADE_FROM names another commit."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ROOT / ".data" / "releases"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def previous_release() -> str:
    """The commit of the previous release (UPGRADE_FROM, or the last contract release)."""
    wanted = os.environ.get("UPGRADE_FROM") or _git(
        "log", "-1", "--format=%H", "--", "protos/released.binpb"
    )
    return _git("rev-parse", "--verify", f"{wanted}^{{commit}}")


def install(commit: str) -> Path:
    """The Python of `commit`'s own environment (built on first use; a few minutes)."""
    base = RELEASES / commit
    python = base / "venv" / "bin" / "python"
    if (base / "ready").exists():
        return python
    shutil.rmtree(base, ignore_errors=True)
    source = base / "source"
    source.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--require-hashes", "-r", "requirements.lock"], cwd=source, check=True)
    # Its generated code, from its own protos by its own grpcio-tools (as `make proto`).
    protos = sorted(str(path.relative_to(source)) for path in (source / "protos").rglob("*.proto"))
    subprocess.run(
        [str(python), "-m", "grpc_tools.protoc", "-I", "protos", "--python_out=.",
         "--grpc_python_out=.", *protos],
        cwd=source,
        check=True,
    )  # fmt: skip
    for folder in [source / "exchange", *(source / "exchange").rglob("*")]:
        if folder.is_dir():
            (folder / "__init__.py").touch()
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "."], cwd=source, check=True)
    (base / "ready").touch()
    return python


if __name__ == "__main__":
    # `make test` builds it before pytest runs, so the upgrade test's time is its own.
    print(install(previous_release()))
