"""The lock files: every package of the dependency graph pinned, with the hashes of its files.

`python -m scripts.lockfiles lock` (`make lock`) resolves pyproject.toml with pip-tools into
requirements.lock (the services' packages, every extra but `dev`, and the build backend: what
the image installs) and requirements-dev.lock (all of that plus the `dev` extra, constrained
to the same pins). Both start with a fingerprint of the requirements they were made for;
`check` (`make setup`) refuses lock files made for another pyproject.toml, and `strays LOCK`
names the installed packages the lock does not hold, for `make setup` to remove. Standard
library only: `check` runs before the virtualenv exists.
"""

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = "requirements.lock"
DEV_LOCK = "requirements-dev.lock"
DEV_EXTRAS = {"dev"}
# Markers and wheels are resolved for the interpreter pip-compile runs on: the image's.
LOCKED_PYTHON = (3, 11)
FINGERPRINT = "# pyproject.toml requirements sha256: "
CONFLICT_MARKERS = ("<<<<<<<", "|||||||", "=======", ">>>>>>>")
PIP_COMPILE_OPTIONS = [
    "--quiet",
    "--generate-hashes",
    "--allow-unsafe",
    "--strip-extras",
    "--all-build-deps",
    "--no-emit-index-url",
    "--no-emit-find-links",
]


def fingerprint(pyproject: Path) -> str:
    """sha256 of everything in pyproject.toml that decides the dependency graph."""
    data = tomllib.loads(pyproject.read_text())
    project = data["project"]
    requirements = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data.get("build-system", {}).get("requires", []),
    }
    return hashlib.sha256(json.dumps(requirements, sort_keys=True).encode()).hexdigest()


def problems(root: Path) -> list[str]:
    """What is wrong with the lock files of the project at `root`; empty when they fit."""
    expected = fingerprint(root / "pyproject.toml")
    found = []
    for name in (LOCK, DEV_LOCK):
        path = root / name
        if not path.exists():
            found.append(f"{name} is missing")
            continue
        text = path.read_text()
        if any(line.startswith(CONFLICT_MARKERS) for line in text.splitlines()):
            found.append(f"{name} has merge conflict markers")
        elif f"{FINGERPRINT}{expected}\n" not in text:
            found.append(f"{name} was locked for another pyproject.toml")
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def strays(lock: Path) -> list[str]:
    """Packages installed in this interpreter's environment that `lock` does not pin (nor
    the project itself): what a dependency removed or replaced left behind."""
    pinned = {
        canonical(match[1]) for match in re.finditer(r"^([^\s#-][^=\s]*)==", lock.read_text(), re.M)
    }
    project = canonical(
        tomllib.loads((lock.parent / "pyproject.toml").read_text())["project"]["name"]
    )
    installed = {canonical(dist.metadata["Name"]) for dist in importlib.metadata.distributions()}
    return sorted(installed - pinned - {project})


def keep_ours(text: str) -> str:
    """A lock file with merge conflicts resolved to our side: pip-compile then keeps the pins
    that still fit and resolves the rest from pyproject.toml."""
    kept, side = [], "both"
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<<"):
            side = "ours"
        elif line.startswith(("|||||||", "=======")) and side != "both":
            side = "theirs"
        elif line.startswith(">>>>>>>") and side != "both":
            side = "both"
        elif side != "theirs":
            kept.append(line)
    return "".join(kept)


def runtime_extras(pyproject: Path) -> list[str]:
    extras = tomllib.loads(pyproject.read_text())["project"].get("optional-dependencies", {})
    return sorted(set(extras) - DEV_EXTRAS)


def pip_compile(root: Path, output: str, options: list[str]) -> None:
    path = root / output
    if path.exists():
        path.write_text(keep_ours(path.read_text()))
    command = [sys.executable, "-m", "piptools", "compile", *PIP_COMPILE_OPTIONS, *options]
    environment = {**os.environ, "CUSTOM_COMPILE_COMMAND": "make lock"}
    subprocess.run(
        [*command, "--output-file", output, "pyproject.toml"], cwd=root, env=environment, check=True
    )
    path.write_text(f"{FINGERPRINT}{fingerprint(root / 'pyproject.toml')}\n{path.read_text()}")


def lock(root: Path, options: list[str]) -> None:
    """Both lock files from pyproject.toml; `options` go to pip-compile (e.g. --upgrade)."""
    if sys.version_info[:2] != LOCKED_PYTHON:
        major, minor = LOCKED_PYTHON
        raise SystemExit(f"the lock files are resolved on Python {major}.{minor}, the image's")
    extras = [f"--extra={extra}" for extra in runtime_extras(root / "pyproject.toml")]
    pip_compile(root, LOCK, [*extras, *options])
    pip_compile(root, DEV_LOCK, ["--all-extras", f"--constraint={LOCK}", *options])


def main(argv: list[str]) -> int:
    if argv[:1] == ["lock"]:
        lock(ROOT, argv[1:])
        return 0
    if argv == ["check"]:
        found = problems(ROOT)
        for problem in found:
            print(f"{problem}: run `make lock` and commit the lock files", file=sys.stderr)
        return 1 if found else 0
    if len(argv) == 2 and argv[0] == "strays":
        print("\n".join(strays(Path(argv[1]).resolve())))
        return 0
    print("usage: python -m scripts.lockfiles lock [PIP-COMPILE OPTIONS] | check | strays LOCK")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
