"""The mutants: one bug each on a money path, as a small patch of one file
(tests/mutation/patches/<name>.patch, applied with `git apply`), and the checks that must
catch it (pytest node ids, run on the patched copy). When the code a patch touches moves
(e.g. a function from a migration to a file of its own), re-target the patch: the paths in
its three header lines, and the line numbers of its hunks as a hint (`git apply --recount`
finds the context nearby); a patch that no longer applies, or that changes code no longer
run, fails the mutation run instead of passing it."""

from dataclasses import dataclass
from pathlib import Path

PATCHES = Path(__file__).resolve().parent / "patches"

# The money paths step by step with the guard on, every invariant and the API checked after
# each step (tests/e2e/test_invariants.py).
MONEY_PATHS = "tests/e2e/test_invariants.py"
# A release naming a wallet its order does not hold, end to end; and any mix of releases,
# stray ones included, against invariants 1-4 (property-based).
RELEASE_GUARDS = "tests/e2e/test_release_guards.py"
RELEASE_PROPERTIES = "tests/integration/test_release_properties.py"


@dataclass(frozen=True)
class Mutant:
    name: str
    # What the bug is, in words.
    bug: str
    # The files its patch changes.
    files: tuple[str, ...]
    checks: tuple[str, ...]


MUTANTS = [
    Mutant(
        "claim-ignores-guard",
        "a claim takes a wallet the watermark guard still holds",
        ("wallet_pool_service/sql/allocation.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "hand-off-ignores-guard",
        "a hand-off to a waiting order takes a wallet the guard still holds",
        ("wallet_pool_service/sql/hand_off.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "hand-off-one-block-early",
        "a hand-off lets a guarded wallet go one block before its watermark",
        ("wallet_pool_service/sql/hand_off.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "release-skips-guard-stamp",
        "a release does not stamp the guard's confirmations: the wallet is reused at once",
        ("wallet_pool_service/sql/release.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "release-frees-another-orders-wallet",
        "a release naming a wallet its order does not hold frees that wallet",
        ("wallet_pool_service/sql/release.sql",),
        (RELEASE_GUARDS, RELEASE_PROPERTIES),
    ),
    Mutant(
        "late-deposit-keeps-wallet",
        "a late deposit does not hold its wallet out: it goes to the next order",
        ("wallet_pool_service/sql/deposits.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "attribution-holding-starts-a-step-late",
        "a deposit at the very start of a holding goes to the previous holder",
        ("wallet_pool_service/sql/deposits.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "attribution-holding-ends-a-step-late",
        "a deposit at the very end of a holding is on time instead of late",
        ("wallet_pool_service/sql/deposits.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "attribution-to-the-first-holder",
        "a deposit goes to the first order that ever held the address",
        ("wallet_pool_service/sql/deposits.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "pool-stats-count-the-hold-as-available",
        "GetPoolStats counts a wallet the guard holds as available, not cooling",
        ("wallet_pool_service/queries.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "list-wallets-allocated-filter-always-true",
        "a tautological filter: ListWallets ALLOCATED lists every wallet",
        ("wallet_pool_service/queries.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "wallet-state-ignores-the-hold",
        "ListWallets reports a wallet the guard holds as AVAILABLE (Python)",
        ("wallet_pool_service/domain.py",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "report-drops-the-last-deposit",
        "an acknowledged report records all its deposits but the last (Python)",
        ("wallet_pool_service/manager.py",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "event-sequence-skipped",
        "the event log skips a sequence number after each sequencer run",
        ("order_service/sql/event_log.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "deposit-event-recorded-twice",
        "a deposit is counted twice in the event log (two DEPOSIT_RECEIVED events)",
        ("order_service/sql/deposits.sql",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "late-deposit-shown-twice",
        "GetOrder lists a late deposit twice",
        ("order_service/queries.sql",),
        (MONEY_PATHS,),
    ),
]
