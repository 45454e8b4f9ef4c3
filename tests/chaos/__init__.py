"""The chaos runs (README, Tests: `make chaos`): `run` strikes services and PostgreSQL at
random, `failover` kills the primary of a primary and standby again and again; both run
PostgreSQL from pgserver's binaries (`replication`), drive `load`, follow `feed`, end with
`checks` and print `report` (through `cli`)."""

from tests.chaos.checks import log_problems, no_work_done_twice
from tests.chaos.report import ChaosReport
from tests.chaos.run import run_chaos, service_env

__all__ = ["ChaosReport", "log_problems", "no_work_done_twice", "run_chaos", "service_env"]
