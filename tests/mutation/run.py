"""The mutation run: a copy of the tree, the named checks run on it as it is (they must pass),
then each mutant's patch applied (`git apply`), its checks run (they must fail), and the
patch taken back out. Prints killed / total, by mutant, with the check that killed it; exits
1 when a mutant survives, a patch no longer applies, or the checks fail on the tree as it is.

    python -m tests.mutation [NAME ...]      # or: make mutants
"""

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.mutation.catalog import MUTANTS, PATCHES, Mutant

ROOT = Path(__file__).resolve().parents[2]
# A mutant whose checks hang is killed too (by the per-test timeout); this bounds the rest.
CHECK_TIMEOUT_SECONDS = 600


@dataclass
class Outcome:
    """One run of some checks: which failed (in their test body, with the assertion's first
    line) and which errored (setting up), and the output's tail."""

    returncode: int
    failed: dict[str, str]
    errored: dict[str, str]
    tail: str
    seconds: float


def copy_tree(dest: Path) -> None:
    """The working tree's files as git sees them (tracked, and new ones not ignored), with the
    generated protobuf package linked in (it is built, never mutated)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (dest / "exchange").symlink_to(ROOT / "exchange", target_is_directory=True)


def git_apply(tree: Path, patch: Path, *, reverse: bool = False) -> str:
    """Apply (or take back) a patch in the copy; returns git's complaint, '' when it applied."""
    args = ["git", "apply", "--recount", *(["--reverse"] if reverse else []), str(patch)]
    done = subprocess.run(args, cwd=tree, capture_output=True, text=True)
    return "" if done.returncode == 0 else (done.stderr.strip() or "git apply failed")


def run_checks(tree: Path, checks: tuple[str, ...], env: dict[str, str]) -> Outcome:
    junit = tree / ".mutation-junit.xml"
    junit.unlink(missing_ok=True)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
             f"--junitxml={junit}", *checks],
            cwd=tree, env=env, capture_output=True, text=True, timeout=CHECK_TIMEOUT_SECONDS,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return Outcome(-1, {"(all)": "timed out"}, {}, "", time.monotonic() - started)
    failed, errored = _junit_results(junit)
    tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
    return Outcome(done.returncode, failed, errored, tail, time.monotonic() - started)


def _junit_results(junit: Path) -> tuple[dict[str, str], dict[str, str]]:
    failed: dict[str, str] = {}
    errored: dict[str, str] = {}
    if not junit.exists():
        return failed, errored
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        for tag, found in (("failure", failed), ("error", errored)):
            element = case.find(tag)
            if element is not None:
                found[name] = _first_line(element.get("message") or element.text or "")
    return failed, errored


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (lines[0] if lines else "")[:300]


@contextlib.contextmanager
def database_url() -> Iterator[str]:
    """DATABASE_URL, or the suite's embedded server (one handle for the whole run)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    from shared.embedded_db import EmbeddedPostgres

    server = EmbeddedPostgres(ROOT / ".data" / "test-postgres")
    try:
        yield server.url
    finally:
        server.close()


def run(mutants: list[Mutant]) -> int:
    with tempfile.TemporaryDirectory(prefix="exchange-mutants-") as tmp, database_url() as url:
        tree = Path(tmp)
        copy_tree(tree)
        env = {**os.environ, "PYTHONPATH": str(tree), "DATABASE_URL": url}
        checks = tuple(dict.fromkeys(check for m in mutants for check in m.checks))
        baseline = run_checks(tree, checks, env)
        print(f"checks on the tree as it is: {len(checks)}, {baseline.seconds:.0f} s", flush=True)
        if baseline.returncode != 0:
            print(f"they must pass before any mutant is tried:\n{baseline.tail}")
            return 1
        killed = 0
        for mutant in mutants:
            killed += _try(tree, mutant, env)
        print(f"mutation score: {killed}/{len(mutants)} killed")
        return 0 if killed == len(mutants) else 1


def _try(tree: Path, mutant: Mutant, env: dict[str, str]) -> bool:
    """Seed one mutant, run its checks, take it out again; True when a check killed it."""
    patch = PATCHES / f"{mutant.name}.patch"
    problem = git_apply(tree, patch)
    if problem:
        print(f"  NOT APPLIED  {mutant.name} ({', '.join(mutant.files)}): {problem}", flush=True)
        return False
    try:
        outcome = run_checks(tree, mutant.checks, env)
    finally:
        undone = git_apply(tree, patch, reverse=True)
        if undone:
            raise RuntimeError(f"{mutant.name} could not be taken out again: {undone}")
    if outcome.failed:
        check, message = next(iter(outcome.failed.items()))
        print(
            f"  killed       {mutant.name} ({', '.join(mutant.files)}; {outcome.seconds:.0f} s)"
            f"\n               by {check}: {message}",
            flush=True,
        )
        return True
    why = "errored setting up" if outcome.errored else "its checks passed"
    print(f"  SURVIVED     {mutant.name}: {why}\n{outcome.tail}", flush=True)
    return False


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("names", nargs="*", help="only these mutants (default: all)")
    args = parser.parse_args()
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"no such mutant: {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    sys.exit(run(chosen))
