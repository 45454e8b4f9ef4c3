"""The lock files (scripts/lockfiles.py, `make lock`) hold every package of pyproject.toml's
graph with hashes, `make setup` refuses them once pyproject.toml has moved on, and `make sbom`
describes exactly what the image installs from them."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts import lockfiles
from tests.databases import ROOT

PYPROJECT = ROOT / "pyproject.toml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins(lock: Path) -> dict[str, tuple[str, int]]:
    """Each locked package's version and how many file hashes it carries."""
    found: dict[str, tuple[str, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        if match := PIN.match(line):
            name = canonicalize_name(match[1])
            found[name] = (match[2], 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def requirements(extras: Iterable[str]) -> list[Requirement]:
    """pyproject.toml's dependencies and those of the given extras."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


def test_the_lock_files_are_those_of_pyproject() -> None:
    assert lockfiles.problems(ROOT) == []


def test_every_requirement_is_locked_at_a_version_it_allows_with_hashes() -> None:
    runtime_extras = lockfiles.runtime_extras(PYPROJECT)
    runtime, dev = pins(ROOT / lockfiles.LOCK), pins(ROOT / lockfiles.DEV_LOCK)
    for lock, wanted in [
        (runtime, requirements(runtime_extras)),
        (dev, requirements([*runtime_extras, *lockfiles.DEV_EXTRAS])),
    ]:
        for requirement in wanted:
            name = canonicalize_name(requirement.name)
            assert name in lock, f"{requirement} is not locked"
            assert requirement.specifier.contains(lock[name][0], prereleases=True), requirement
    assert {name for name, (_, hashes) in {**runtime, **dev}.items() if hashes == 0} == set()
    assert "setuptools" in runtime  # the build backend: nothing is fetched unchecked
    assert {name: dev[name] for name in runtime} == runtime


def test_setup_refuses_lock_files_made_for_another_pyproject(tmp_path: Path) -> None:
    for name in ("pyproject.toml", lockfiles.LOCK, lockfiles.DEV_LOCK):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts", ignore=shutil.ignore_patterns("__py*"))
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("dependencies = [\n", 'dependencies = [\n    "idna==3.10",\n')
    )

    check = subprocess.run(
        [sys.executable, "-m", "scripts.lockfiles", "check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert check.returncode == 1
    assert check.stderr.splitlines() == [
        f"{name} was locked for another pyproject.toml: run `make lock` and commit the lock files"
        for name in (lockfiles.LOCK, lockfiles.DEV_LOCK)
    ]


def test_a_conflicted_lock_is_relocked_from_our_side() -> None:
    conflicted = (
        "# header\n"
        "<<<<<<< HEAD\n"
        "grpcio==1.85.1 \\\n"
        "||||||| base\n"
        "grpcio==1.80.0 \\\n"
        "=======\n"
        "grpcio==1.86.0 \\\n"
        ">>>>>>> otel\n"
        "    --hash=sha256:00\n"
    )
    assert lockfiles.keep_ours(conflicted) == "# header\ngrpcio==1.85.1 \\\n    --hash=sha256:00\n"
    assert lockfiles.problems(ROOT) == []  # and the committed ones carry no markers


def test_setup_removes_what_the_lock_no_longer_holds() -> None:
    # This environment is the dev lock's: measured against the image's lock, the dev tools
    # are the strays, the services' packages and the project itself are not.
    assert lockfiles.strays(ROOT / lockfiles.DEV_LOCK) == []
    strays = set(lockfiles.strays(ROOT / lockfiles.LOCK))
    assert {"pytest", "mypy", "types-grpcio"} <= strays
    assert strays.isdisjoint({"grpcio", "asyncpg", "setuptools", "exchange-office"})


def test_the_sbom_lists_exactly_what_the_image_installs(tmp_path: Path) -> None:
    sbom, image = tmp_path / "sbom.cdx.json", tmp_path / "image-env"
    subprocess.run(
        ["make", "-s", "sbom", f"SBOM={sbom}", f"IMAGE_ENV={image}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )

    document = json.loads(sbom.read_text())
    assert document["bomFormat"] == "CycloneDX"
    root = document["metadata"]["component"]
    assert (root["name"], root["type"]) == ("exchange-office", "application")
    components = {
        canonicalize_name(component["name"]): component for component in document["components"]
    }
    locked = pins(ROOT / lockfiles.LOCK)
    assert {name: c["version"] for name, c in components.items()} == {
        name: version for name, (version, _) in locked.items()
    }
    for name, component in components.items():
        assert component["purl"].lower() == f"pkg:pypi/{name}@{component['version']}".lower()
    names = {component["bom-ref"]: name for name, component in components.items()}
    depends_on = {entry["ref"]: entry.get("dependsOn", []) for entry in document["dependencies"]}
    assert {names[ref] for ref in depends_on[root["bom-ref"]]} == {
        canonicalize_name(requirement.name) for requirement in requirements([])
    }
    # The project, installed from its own files alone, has its generated code and SQL files.
    script = (
        "import importlib.resources as r, order_service.app, wallet_pool_service.app;"
        "migrations = r.files('order_service').joinpath('migrations').iterdir();"
        "print(sorted(p.name for p in migrations if p.name.endswith('.sql')))"
    )
    imported = subprocess.run(
        [image / "bin" / "python", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert imported.returncode == 0, imported.stderr
    migrations = sorted(path.name for path in (ROOT / "order_service" / "migrations").glob("*.sql"))
    assert imported.stdout.strip() == str(migrations)
