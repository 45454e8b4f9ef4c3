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

# The money paths step by step with the guard on, every invariant (issue 20's included) and
# the API checked after each step (tests/e2e/test_invariants.py).
MONEY_PATHS = "tests/e2e/test_invariants.py"
# A release naming a wallet its order does not hold, end to end; and any mix of releases,
# stray ones included, against invariants 1-4 (property-based).
RELEASE_GUARDS = "tests/e2e/test_release_guards.py"
RELEASE_PROPERTIES = "tests/integration/test_release_properties.py"
# Issue 20's rules as pure functions, table by table: the payment status (tolerance, PARTIAL,
# what counts toward it) and a deposit's disposition (spam, dust at its minimum, wrong asset).
PAYMENT_RULE = "tests/unit/test_payment.py"
DISPOSITION_RULE = "tests/unit/test_dispositions.py"
# A USDT order paid in USDT, with the coin and a fake USDT in the same transaction, end to end.
ASSETS_END_TO_END = (
    "tests/e2e/test_assets.py::"
    "test_a_usdt_order_shows_its_token_deposit_counted_and_the_others_set_aside"
)
# Dust and spam tokens to a released wallet, on the pool's database: never disable it.
LATE_DUST = (
    "tests/integration/test_dispositions.py::"
    "test_dust_and_spam_tokens_to_a_released_wallet_are_recorded_late_but_never_disable_it",
    "tests/integration/test_dispositions.py::"
    "test_a_dust_deposit_made_late_by_the_release_does_not_disable_the_wallet",
)
# Whether a deposit is late: the rule's table of cases, and the window between an order
# becoming final and its release reaching the pool, end to end.
LATENESS_RULE = "tests/integration/test_lateness.py"
RELEASE_WINDOW = "tests/e2e/test_late_release.py"
# The payment window: a paid order outlives it, one with only dust does not.
PAYMENT_WINDOW = (
    "tests/e2e/test_payment_window.py::"
    "test_an_order_with_a_payment_outlives_its_window_and_one_with_dust_does_not"
)


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
        (MONEY_PATHS, LATENESS_RULE),
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
    Mutant(
        "late-dust-holds-wallet",
        "a dust (or spam-token) deposit after the release disables the wallet like a counted one",
        ("wallet_pool_service/sql/deposits.sql",),
        (MONEY_PATHS, *LATE_DUST),
    ),
    Mutant(
        "wrong-asset-counted",
        "a known asset other than the order's (the coin to a USDT order) is COUNTED",
        ("wallet_pool_service/sql/deposits.sql",),
        (MONEY_PATHS, ASSETS_END_TO_END),
    ),
    Mutant(
        "spam-token-counted",
        "a token of an unknown contract (a fake USDT) is COUNTED (Python)",
        ("wallet_pool_service/deposits.py",),
        (MONEY_PATHS, DISPOSITION_RULE, ASSETS_END_TO_END),
    ),
    Mutant(
        "spam-token-counts-as-the-coin",
        "the order service reads the pool's UNKNOWN_ASSET as a counted coin deposit (Python)",
        ("order_service/wallet_pool_client.py",),
        (MONEY_PATHS,),
    ),
    Mutant(
        "dust-at-the-minimum",
        "a deposit of exactly the asset's minimum is DUST (Python)",
        ("wallet_pool_service/deposits.py",),
        (MONEY_PATHS, DISPOSITION_RULE),
    ),
    Mutant(
        "payment-ignores-the-tolerance",
        "the payment status ignores the tolerance: a withdrawal fee short is PARTIAL (Python)",
        ("order_service/payment.py",),
        (MONEY_PATHS, PAYMENT_RULE),
    ),
    Mutant(
        "partial-payment-is-paid",
        "a partial payment is PAID (Python)",
        ("order_service/payment.py",),
        (MONEY_PATHS, PAYMENT_RULE),
    ),
    Mutant(
        "confirmed-deposit-counted-twice",
        "a confirmed deposit is counted in the received amounts twice: confirmed and pending",
        ("order_service/payment.py",),
        (MONEY_PATHS, PAYMENT_RULE),
    ),
    Mutant(
        "reverted-deposit-still-counts",
        "a reverted deposit (a reorg, a replacement) still counts toward payment (Python)",
        ("order_service/domain.py",),
        (MONEY_PATHS, PAYMENT_RULE),
    ),
    Mutant(
        "release-makes-late-unannounced",
        "a release makes a deposit late without a new change number: the order service never"
        " learns it, and counts it",
        ("wallet_pool_service/sql/release.sql",),
        (LATENESS_RULE, RELEASE_WINDOW),
    ),
    Mutant(
        "payment-counts-before-the-release-lands",
        "a final order's payment is evaluated while its release is owed: it counts a deposit"
        " the pool is about to call late",
        ("order_service/queries.sql",),
        (RELEASE_WINDOW,),
    ),
    Mutant(
        "payment-window-expires-a-paid-order",
        "the payment window expires an order that has a counted deposit",
        ("order_service/queries.sql",),
        (PAYMENT_WINDOW,),
    ),
]
