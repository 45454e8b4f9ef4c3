"""Chaos: hundreds of concurrent order lifecycles over gRPC while the order service and the
wallet pool service are SIGKILLed and PostgreSQL is restarted (fast, or crashed) at random
moments, a consumer follows the event feed (`WatchOrderEvents`) and a chain watcher reports
deposits (`tests/chaos/watcher.py`) through it all. At the
end, with everything back, the invariants must hold (`tests.invariants.check_all`), no
call may have been answered INTERNAL or UNKNOWN, and the feed the consumer received must be
the event log, each event once and in order, with every acknowledged change in it.

The harness runs its own PostgreSQL cluster from the binaries the `pgserver` package ships (a
dev dependency), so it works wherever `make test` does and can restart the server at will.

    python -m tests.chaos --seconds 300 [--seed N]      # or: make chaos CHAOS_SECONDS=300

The seed (printed; CHAOS_SEED) fixes every random choice of the run: which lifecycle each
order follows, and when and what the chaos strikes. Timing still varies between runs, so a
replay reproduces the scenario, not every interleaving.

Modules: `cluster` (the PostgreSQL cluster), `load` (the lifecycles and the operator),
`feed` (the event feed's consumer and its checks), `checks` (the other checks at the end),
`report`, and `run` (the services, the blows, the end).

`failover` is the other chaos run (`python -m tests.chaos.failover`, or `make chaos
CHAOS_MODE=failover`): the primary of a PostgreSQL primary and synchronous standby
(`replication`) killed and the standby promoted, again and again; its load is in
`failover_load`, its report in `failover_report`. Both runs share `postgres` (pgserver's
binaries, run as a non-root user when needed), `checks.log_problems`, `feed.FeedConsumer`,
the report's rendering and `cli`.
"""

from tests.chaos.checks import log_problems, no_work_done_twice
from tests.chaos.report import ChaosReport
from tests.chaos.run import run_chaos, service_env

__all__ = ["ChaosReport", "log_problems", "no_work_done_twice", "run_chaos", "service_env"]
