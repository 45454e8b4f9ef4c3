"""Deposits reported by chain watchers and the watermark guard of reuse: values and checks,
no I/O here."""

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from shared.addresses import address_problem, canonical_address
from shared.assets import TOKEN_NETWORKS, Asset, AssetTable, check_scale
from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument, Violation
from shared.rows import Row, from_row
from shared.validation import parse_text
from wallet_pool_service.domain import MAX_ADDRESS_LENGTH

MAX_DEPOSITS_PER_REPORT = 1000
MAX_TXID_LENGTH = 128
# Heights stay below 2^62: the database stands 2^62 in for "not known yet" (migration 009).
MAX_HEIGHT = 2**62 - 1
_MAX_INDEX = 2**31 - 1


class DepositKind(enum.StrEnum):
    """What moved value: a deposit's key is (network, txid, kind, index)."""

    NATIVE = "NATIVE"  # the coin: a UTXO output, or an account chain's value transfer
    TOKEN = "TOKEN"  # a token Transfer log (index: its position in the receipt)
    INTERNAL = "INTERNAL"  # the coin moved by a contract call (index: trace position)


class Disposition(enum.StrEnum):
    """What a recorded deposit does; each has exactly one. Only COUNTED moves money
    (counts toward payment) or wallets (holds a late one out)."""

    COUNTED = "COUNTED"
    DUST = "DUST"  # below the asset's minimum
    UNKNOWN_ASSET = "UNKNOWN_ASSET"  # a contract the office does not take (spam)
    WRONG_ASSET = "WRONG_ASSET"  # a known asset, not the one the order expects


class DepositStatus(enum.StrEnum):
    """Where a deposit stands on its chain: CONFIRMING -> CONFIRMED at its asset's
    confirmations; REVERTED when retracted (and CONFIRMING again if mined again)."""

    CONFIRMING = "CONFIRMING"
    CONFIRMED = "CONFIRMED"
    REVERTED = "REVERTED"


class RetractionReason(enum.StrEnum):
    ORPHANED = "ORPHANED"  # its block left the chain in a reorganisation
    REPLACED = "REPLACED"  # another transaction spending the same inputs (RBF) was mined
    DOUBLE_SPENT = "DOUBLE_SPENT"


@dataclass(frozen=True)
class Retraction:
    """A deposit the watcher reported that is no longer on the chain."""

    txid: str
    kind: DepositKind
    index: int
    reason: RetractionReason


def classify(asset: Asset | None, amount: Decimal, expected: str | None) -> Disposition:
    """A deposit's disposition: `asset` is what its contract resolved to (None: unknown),
    `expected` the asset code the order holding the address expects (None: no order held
    it). Spam first (its amount means nothing), then dust (of any known asset: a few cents of
    the wrong asset are not worth an operator's look), then the order's asset."""
    if asset is None:
        return Disposition.UNKNOWN_ASSET
    if amount < asset.min_deposit:
        return Disposition.DUST
    if expected is not None and expected != asset.code:
        return Disposition.WRONG_ASSET
    return Disposition.COUNTED


def disposition_before_attribution(asset: Asset | None, amount: Decimal) -> Disposition | None:
    """What `classify` decides without the holder (UNKNOWN_ASSET or DUST); None when it
    depends on the order holding the address, which the database knows (COUNTED or
    WRONG_ASSET, decided as `classify` does)."""
    disposition = classify(asset, amount, None)
    return None if disposition is Disposition.COUNTED else disposition


@dataclass(frozen=True)
class ChainDeposit:
    """A deposit as a watcher saw it on the chain."""

    address: str
    txid: str
    index: int
    amount: Decimal
    block_height: int
    block_time: datetime
    confirmations: int
    kind: DepositKind = DepositKind.NATIVE
    # The token's contract (canonical once checked); None for the coin.
    token_contract: str | None = None
    # The hash of the block it is in (None: not given).
    block_hash: str | None = None

    @property
    def key(self) -> tuple[str, DepositKind, int]:
        return self.txid, self.kind, self.index


class Attribution(enum.StrEnum):
    ON_TIME = "ON_TIME"
    LATE = "LATE"
    UNATTRIBUTED = "UNATTRIBUTED"


@dataclass(frozen=True)
class Deposit:
    """A recorded deposit and whom it was attributed to."""

    id: int
    network: str
    chain: ChainDeposit
    report_time: datetime
    order_id: uuid.UUID | None
    # Late: when the order it is attributed to released the address.
    release_time: datetime | None
    # The asset's code ('' the coin; None: an unknown contract).
    asset: str | None = ""
    disposition: Disposition = Disposition.COUNTED
    # Stamped from the asset when first recorded (None: unknown asset, or recorded before).
    required_confirmations: int | None = None
    status: DepositStatus = DepositStatus.CONFIRMED
    # Its last change's number: the cursor of ListDepositChanges.
    change: int = 0
    revert_reason: str | None = None
    # Reverted although confirmed at or below the finalized height.
    finality_violation: bool = False

    @property
    def attribution(self) -> Attribution:
        if self.order_id is None:
            return Attribution.UNATTRIBUTED
        return Attribution.LATE if self.release_time is not None else Attribution.ON_TIME

    @property
    def late_by(self) -> timedelta | None:
        if self.release_time is None:
            return None
        return self.chain.block_time - self.release_time

    @classmethod
    def from_row(cls, row: Row) -> "Deposit":
        chain = from_row(
            ChainDeposit,
            row,
            columns={"index": "output_index"},
            convert={"kind": DepositKind},
        )
        return from_row(
            cls,
            row,
            columns={
                "report_time": "reported_at",
                "release_time": "released_at",
                "change": "change_seq",
            },
            convert={"disposition": Disposition, "status": DepositStatus},
            given={"chain": chain},
        )


@dataclass(frozen=True)
class ReportOutcome:
    recorded: int
    repeated: int
    late: int
    unattributed: int
    scanned_height: int
    # Of the recorded, by disposition.
    dispositions: dict[Disposition, int] = field(default_factory=dict)
    # Of the recorded, by (attribution, disposition): the metrics.
    tally: dict[tuple[str, str], int] = field(default_factory=dict)
    # Recorded before, moved to another block or confirmations (or mined again).
    updated: int = 0
    # Retracted by this report (already reverted ones aside), and of those, confirmed ones
    # at or below the finalized height.
    reverted: int = 0
    finality_violations: int = 0


@dataclass(frozen=True)
class ClassifiedDeposit:
    """A checked deposit with its asset resolved ('' the coin; None unknown) and the
    disposition decided before attribution (None: by the holder's asset)."""

    chain: ChainDeposit
    asset: str | None
    disposition: Disposition | None
    # The asset's confirmations, stamped on the deposit (None: unknown asset).
    required_confirmations: int | None = None


def resolve(
    assets: AssetTable, network: str, deposit: ChainDeposit, field: str
) -> ClassifiedDeposit:
    """The deposit's asset and its disposition as far as it is known before attribution. A
    known asset's amount must fit its decimals (a watcher that reports more is wrong)."""
    asset = assets.by_contract(network, deposit.token_contract or "")
    if asset is not None:
        check_scale(deposit.amount, asset, f"{field}.amount")
    return ClassifiedDeposit(
        deposit,
        asset.code if asset is not None else None,
        disposition_before_attribution(asset, deposit.amount),
        asset.confirmations if asset is not None else None,
    )


@dataclass(frozen=True)
class Watermark:
    """A network's guard setting (None: off) and its watcher's progress (None: silent)."""

    network: str
    reuse_confirmations: int | None
    scanned_height: int | None
    report_time: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> "Watermark":
        return from_row(cls, row, columns={"report_time": "reported_at"})

    @property
    def guarded(self) -> bool:
        return self.reuse_confirmations is not None

    def held_reason(self, held: int) -> str:
        """Why `held` released wallets of the network are not reused yet ('' if none)."""
        if not held:
            return ""
        if self.scanned_height is None:
            return (
                f"the {self.network} watcher has never reported a scanned height: "
                f"{held} released wallets wait for it"
            )
        return (
            f"{held} released wallets wait for the {self.network} watcher to scan "
            f"{self.reuse_confirmations} blocks past their release (scanned "
            f"{self.scanned_height})"
        )


def check_height(value: int, field: str) -> int:
    if value > MAX_HEIGHT:
        raise InvalidArgument(field, f"{value} is beyond any chain's height (at most {MAX_HEIGHT})")
    return value


def check_deposit(network: str, field: str, deposit: ChainDeposit, scanned: int) -> ChainDeposit:
    """The deposit with its address in canonical form, or InvalidArgument naming the field."""
    address = parse_text(deposit.address, f"{field}.address", MAX_ADDRESS_LENGTH, required=True)
    problem = address_problem(network, address)
    if problem:
        raise InvalidArgument(
            f"{field}.address", f"{address!r} is not a valid {network} address: {problem}"
        )
    txid = parse_text(deposit.txid, f"{field}.txid", MAX_TXID_LENGTH, required=True)
    if deposit.index > _MAX_INDEX:
        raise InvalidArgument(f"{field}.index", f"at most {_MAX_INDEX}")
    height = check_height(deposit.block_height, f"{field}.block_height")
    if height > scanned:
        raise InvalidArgument(
            f"{field}.block_height",
            f"{height} is beyond the report's scanned_height {scanned}",
        )
    return ChainDeposit(
        address=canonical_address(address),
        txid=txid,
        index=deposit.index,
        amount=deposit.amount,
        block_height=height,
        block_time=deposit.block_time,
        confirmations=deposit.confirmations,
        kind=deposit.kind,
        token_contract=_check_contract(network, field, deposit),
        block_hash=parse_text(deposit.block_hash or "", f"{field}.block_hash", MAX_TXID_LENGTH)
        or None,
    )


def check_retractions(
    network: str, retractions: list[Retraction], deposits: Sequence[ChainDeposit] = ()
) -> list[Retraction]:
    """The retractions with their txids checked; InvalidArgument naming the field. A report
    says what left the chain and what is on it: one deposit cannot be both."""
    if len(retractions) > MAX_DEPOSITS_PER_REPORT:
        raise InvalidArgument("reverted", f"at most {MAX_DEPOSITS_PER_REPORT} per report")
    reported = {d.key: position for position, d in enumerate(deposits)}
    checked = []
    for position, retraction in enumerate(retractions):
        field = f"reverted[{position}]"
        txid = parse_text(retraction.txid, f"{field}.txid", MAX_TXID_LENGTH, required=True)
        if retraction.index > _MAX_INDEX:
            raise InvalidArgument(f"{field}.index", f"at most {_MAX_INDEX}")
        if retraction.kind is not DepositKind.NATIVE and network not in TOKEN_NETWORKS:
            raise InvalidArgument(f"{field}.kind", f"{network} deposits are its coin only")
        both = reported.get((txid, retraction.kind, retraction.index))
        if both is not None:
            raise InvalidArgument(field, f"is also deposits[{both}]: reverted or on the chain?")
        checked.append(Retraction(txid, retraction.kind, retraction.index, retraction.reason))
    return checked


def check_finalized_height(finalized: int, scanned_height: int) -> int:
    """The finalized height a report gives (0: none), never above its scanned height."""
    height = check_height(finalized, "finalized_height")
    if height > scanned_height:
        raise InvalidArgument(
            "finalized_height", f"{height} is beyond the report's scanned_height {scanned_height}"
        )
    return height


def _check_contract(network: str, field: str, deposit: ChainDeposit) -> str | None:
    """The token contract in canonical form (None for the coin), or InvalidArgument."""
    contract = (deposit.token_contract or "").strip()
    if deposit.kind is not DepositKind.NATIVE and network not in TOKEN_NETWORKS:
        raise InvalidArgument(f"{field}.kind", f"{network} deposits are its coin only (NATIVE)")
    if deposit.kind is DepositKind.TOKEN and not contract:
        raise InvalidArgument(f"{field}.token_contract", "is required for a TOKEN deposit")
    if deposit.kind is not DepositKind.TOKEN:
        if contract:
            raise InvalidArgument(
                f"{field}.token_contract", f"must be empty for a {deposit.kind} deposit"
            )
        return None
    problem = address_problem(network, contract)
    if problem:
        raise InvalidArgument(
            f"{field}.token_contract",
            f"{contract[:64]!r} is not a valid {network} address: {problem}",
        )
    return canonical_address(contract)


def check_report(
    network: str, deposits: list[ChainDeposit], scanned_height: int
) -> list[ChainDeposit]:
    """The report's deposits, checked; InvalidArgument naming the first bad field. A deposit
    repeated within the report must be the same deposit."""
    scanned = check_height(scanned_height, "scanned_height")
    if len(deposits) > MAX_DEPOSITS_PER_REPORT:
        raise InvalidArgument("deposits", f"at most {MAX_DEPOSITS_PER_REPORT} per report")
    checked: list[ChainDeposit] = []
    seen: dict[tuple[str, DepositKind, int], int] = {}
    for position, raw in enumerate(deposits):
        field = f"deposits[{position}]"
        deposit = check_deposit(network, field, raw, scanned)
        first = seen.setdefault(deposit.key, position)
        earlier = checked[first] if first != position else None
        if earlier is not None and (
            earlier.address,
            earlier.amount,
            earlier.token_contract,
        ) != (deposit.address, deposit.amount, deposit.token_contract):
            raise InvalidArgument(
                field,
                f"{deposit.txid}:{deposit.kind}:{deposit.index} is also deposits[{first}], "
                "with another address, amount or contract",
            )
        checked.append(deposit)
    return checked


def check_chain_height(chain_height: int, scanned_height: int) -> int:
    """The chain's height a report gives (0: its scanned height); never below that."""
    if not chain_height:
        return scanned_height
    chain = check_height(chain_height, "chain_height")
    if chain < scanned_height:
        raise InvalidArgument(
            "chain_height", f"{chain} is below the report's scanned_height {scanned_height}"
        )
    return chain


class ScannedHeightBackwards(FailedPrecondition):
    def __init__(self, network: str, reported: int, known: int) -> None:
        super().__init__(
            f"scanned_height: {reported} is below the {network} height already reported "
            f"({known}); scanned heights never go back; nothing was recorded",
            Violation("SCANNED_HEIGHT", f"network:{network}", f"already scanned up to {known}"),
        )


@dataclass(frozen=True)
class DepositConflict:
    position: int
    known_address: str
    known_amount: Decimal
    known_contract: str | None = None


class DepositRecordedDifferently(AlreadyExists):
    """A deposit already recorded came again with another address or amount: the first
    report is kept, and nothing of this one is recorded."""

    def __init__(self, network: str, deposits: list[ChainDeposit], first: DepositConflict) -> None:
        deposit = deposits[first.position]
        known = f"{first.known_amount} to {first.known_address}"
        reported = f"{deposit.amount} to {deposit.address}"
        if first.known_contract != deposit.token_contract:
            known += f" of contract {first.known_contract or '(the coin)'}"
            reported += f" of contract {deposit.token_contract or '(the coin)'}"
        super().__init__(
            f"deposits[{first.position}]: {network} deposit {deposit.txid}:{deposit.index} was "
            f"recorded before as {known}, not {reported}; the first report is kept and "
            "nothing of this report was recorded"
        )
