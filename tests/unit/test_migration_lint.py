"""squawk, as make lint runs it, passes the migrations, yet still flags what a new migration
gets wrong: the files allowed in .squawk.toml are the applied ones, not a blanket."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.databases import ROOT

SQUAWK = Path(sys.executable).parent / "squawk"
# The header .squawk.toml asks a new migration to start with.
TIMEOUTS = "SET LOCAL lock_timeout = '5s';\nSET LOCAL statement_timeout = '60s';\n"


def squawk(*paths: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(SQUAWK),
            "--config",
            str(ROOT / ".squawk.toml"),
            "--no-error-on-unmatched-pattern",
            "--reporter",
            "gcc",
            *paths,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_services_migrations_pass_squawk() -> None:
    files = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*_service/migrations/*.sql"))
    assert len(files) >= 13
    result = squawk(*files)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("sql", "rules"),
    [
        (
            "ALTER TABLE orders.orders ADD COLUMN note text;\n",
            {"require-lock-timeout", "require-statement-timeout"},
        ),
        (
            TIMEOUTS + "CREATE INDEX orders_note_idx ON orders.orders (note);\n",
            {"require-concurrent-index-creation"},
        ),
        (
            TIMEOUTS + "ALTER TABLE orders.orders ADD COLUMN attempts int;\n",
            {"prefer-bigint-over-int"},
        ),
    ],
    ids=["no timeouts", "blocking index", "int column"],
)
def test_a_new_migration_is_flagged_for_what_it_gets_wrong(
    tmp_path: Path, sql: str, rules: set[str]
) -> None:
    migration = tmp_path / "009_new.sql"
    migration.write_text(sql)
    result = squawk(str(migration))
    assert result.returncode != 0
    flagged = {line.split(": warning: ")[1].split()[0] for line in result.stdout.splitlines()}
    assert flagged == rules, result.stdout


def test_a_new_migration_that_sets_its_timeouts_passes(tmp_path: Path) -> None:
    migration = tmp_path / "009_new.sql"
    migration.write_text(TIMEOUTS + "ALTER TABLE orders.orders ADD COLUMN note text;\n")
    result = squawk(str(migration))
    assert result.returncode == 0, result.stdout + result.stderr
