"""gRPC face of the pool: protobuf in, use case, protobuf out. Errors are mapped by the
shared interceptor."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pb_grpc
from shared.assets import Asset
from shared.auth import OPERATOR, SERVICE, WATCHER, method_policy
from shared.errors import InvalidArgument
from shared.proto import from_pb, same_fields, to_pb
from shared.timestamps import parse_timestamp, to_timestamp
from shared.validation import parse_decimal_amount, parse_text, parse_uuid
from wallet_pool_service.deposits import (
    Attribution,
    ChainDeposit,
    Deposit,
    DepositKind,
    DepositStatus,
    Disposition,
    Retraction,
    RetractionReason,
)
from wallet_pool_service.domain import Wallet, WalletState
from wallet_pool_service.manager import WalletPoolManager

_SERVICE = pb.DESCRIPTOR.services_by_name["WalletPoolService"]
SERVICE_NAME = _SERVICE.full_name
_OPERATOR = frozenset({OPERATOR})
METHOD_ROLES = method_policy(
    SERVICE_NAME,
    _SERVICE.methods_by_name,
    {
        # Only the order service allocates and releases.
        "AllocateWallet": frozenset({SERVICE}),
        "ReleaseWallet": frozenset({SERVICE}),
        "GetPoolStats": frozenset({OPERATOR, SERVICE}),
        "AddWallets": _OPERATOR,
        "DisableWallet": _OPERATOR,
        "EnableWallet": _OPERATOR,
        "ListWallets": _OPERATOR,
        "GetWalletHistory": _OPERATOR,
        "WatchHandOffs": frozenset({SERVICE}),
        "ReportDeposits": frozenset({WATCHER}),
        "ListLateDeposits": _OPERATOR,
        "ListDeposits": frozenset({OPERATOR, SERVICE}),
        "ListAssets": frozenset({OPERATOR, SERVICE, WATCHER}),
        "ListDepositChanges": frozenset({OPERATOR, SERVICE}),
    },
)
_STATE_TO_PB = to_pb(WalletState, pb.WalletState, "WALLET_STATE_")
_STATE_FROM_PB = from_pb(_STATE_TO_PB)
_ATTRIBUTION_TO_PB = to_pb(Attribution, pb.DepositAttribution, "DEPOSIT_ATTRIBUTION_")
_KIND_TO_PB = to_pb(DepositKind, pb.DepositKind, "DEPOSIT_KIND_")
_KIND_FROM_PB = from_pb(_KIND_TO_PB)
DISPOSITION_TO_PB = to_pb(Disposition, pb.DepositDisposition, "DEPOSIT_DISPOSITION_")
_STATUS_TO_PB = to_pb(DepositStatus, pb.DepositStatus, "DEPOSIT_STATUS_")
_REASON_FROM_PB = from_pb(to_pb(RetractionReason, pb.RetractionReason, "RETRACTION_REASON_"))
# What a report did, as the answer shows it.
_OUTCOME_FIELDS = (
    "recorded",
    "repeated",
    "late",
    "unattributed",
    "scanned_height",
    "updated",
    "reverted",
    "finality_violations",
)
# NetworkStats' fields that the message shows as they are.
_STATS_FIELDS = (
    "network",
    "total",
    "available",
    "allocated",
    "queued",
    "disabled",
    "cooling",
    "below_low_water_mark",
    "low_water_mark",
    "held_by_watermark",
    "held_reason",
)


def wallet_to_pb(wallet: Wallet) -> pb.Wallet:
    return pb.Wallet(
        address=wallet.address,
        network=wallet.network,
        state=_STATE_TO_PB[wallet.state],
        order_id=str(wallet.order_id) if wallet.order_id else "",
        disabled=wallet.disabled,
        disabled_reason=wallet.disabled_reason,
        create_time=to_timestamp(wallet.create_time),
        release_time=to_timestamp(wallet.release_time),
        cooldown_end_time=to_timestamp(wallet.cooldown_end_time),
        release_height=wallet.release_height or 0,
        # Until the watcher's next report gives the release its height, the database holds
        # a stand-in beyond any chain (migration 009): not a height to show.
        reuse_height=(wallet.reuse_height or 0) if wallet.release_height is not None else 0,
        cooling_reason=wallet.cooling_reason,
    )


def retraction_from_pb(retraction: pb.Retraction, field: str) -> Retraction:
    reason = _REASON_FROM_PB.get(retraction.reason)
    if reason is None:
        raise InvalidArgument(f"{field}.reason", "ORPHANED, REPLACED or DOUBLE_SPENT is required")
    kind = _KIND_FROM_PB.get(retraction.kind)
    if kind is None:
        raise InvalidArgument(f"{field}.kind", "NATIVE, TOKEN or INTERNAL is required")
    return Retraction(retraction.txid, kind, retraction.index, reason)


def asset_to_pb(asset: Asset) -> pb.Asset:
    return pb.Asset(
        network=asset.network,
        code=asset.code,
        symbol=asset.symbol,
        contract=asset.contract or "",
        decimals=asset.decimals,
        min_deposit=str(asset.min_deposit),
        confirmations=asset.confirmations,
    )


def _kind_from_pb(deposit: pb.ChainDeposit, field: str) -> DepositKind:
    """The kind sent; unspecified (a watcher of the previous contract): TOKEN when a
    contract is given, NATIVE otherwise."""
    if deposit.kind == pb.DEPOSIT_KIND_UNSPECIFIED:
        return DepositKind.TOKEN if deposit.token_contract.strip() else DepositKind.NATIVE
    kind: DepositKind | None = _KIND_FROM_PB.get(deposit.kind)
    if kind is None:
        raise InvalidArgument(f"{field}.kind", f"{deposit.kind} is not a deposit kind")
    return kind


def deposit_to_pb(deposit: Deposit) -> pb.Deposit:
    chain = deposit.chain
    late_by = None
    if deposit.late_by is not None:
        late_by = Duration()
        late_by.FromTimedelta(deposit.late_by)
    return pb.Deposit(
        **same_fields(deposit, "id", "network", "finality_violation"),
        **same_fields(chain, "address", "txid", "index", "block_height", "confirmations"),
        amount=str(chain.amount),
        block_time=to_timestamp(chain.block_time),
        report_time=to_timestamp(deposit.report_time),
        attribution=_ATTRIBUTION_TO_PB[deposit.attribution],
        order_id=str(deposit.order_id) if deposit.order_id else "",
        late_by=late_by,
        token_contract=chain.token_contract or "",
        kind=_KIND_TO_PB[chain.kind],
        asset=deposit.asset or "",
        disposition=DISPOSITION_TO_PB[deposit.disposition],
        required_confirmations=deposit.required_confirmations or 0,
        status=_STATUS_TO_PB[deposit.status],
        block_hash=chain.block_hash or "",
        change_sequence=deposit.change,
        revert_reason=deposit.revert_reason or "",
    )


def chain_deposit_from_pb(deposit: pb.ChainDeposit, field: str) -> ChainDeposit:
    """Fields as sent (the manager checks them against the network); the amount parsed."""
    if not deposit.HasField("block_time"):
        raise InvalidArgument(f"{field}.block_time", "is required")
    block_time = parse_timestamp(deposit.block_time, f"{field}.block_time")
    return ChainDeposit(
        address=deposit.address,
        txid=deposit.txid,
        index=deposit.index,
        amount=parse_decimal_amount(deposit.amount, f"{field}.amount"),
        block_height=deposit.block_height,
        block_time=block_time,
        confirmations=deposit.confirmations,
        kind=_kind_from_pb(deposit, field),
        token_contract=deposit.token_contract or None,
        block_hash=deposit.block_hash or None,
    )


def parse_state(number: int) -> WalletState | None:
    if number == pb.WALLET_STATE_UNSPECIFIED:
        return None
    state: WalletState | None = _STATE_FROM_PB.get(number)
    if state is None:
        raise InvalidArgument("state", f"{number} is not a valid wallet state")
    return state


Context = grpc.aio.ServicerContext[Any, Any]


class WalletPoolServicer(pb_grpc.WalletPoolServiceServicer):
    def __init__(self, manager: WalletPoolManager) -> None:
        self._manager = manager

    async def AllocateWallet(
        self, request: pb.AllocateWalletRequest, context: Context
    ) -> pb.AllocateWalletResponse:
        order_id = parse_uuid(request.order_id, "order_id")
        allocation = await self._manager.allocate_wallet(order_id, request.network, request.asset)
        if allocation.address is not None:
            return pb.AllocateWalletResponse(address=allocation.address)
        return pb.AllocateWalletResponse(queue_position=allocation.queue_position or 0)

    async def ReleaseWallet(
        self, request: pb.ReleaseWalletRequest, context: Context
    ) -> pb.ReleaseWalletResponse:
        order_id = parse_uuid(request.order_id, "order_id")
        final_time = (
            parse_timestamp(request.final_time, "final_time")
            if request.HasField("final_time")
            else None
        )
        release = await self._manager.release_wallet(order_id, request.address, final_time)
        return pb.ReleaseWalletResponse(
            released=release.released,
            dequeued=release.dequeued,
            deposit_change=release.deposit_change,
        )

    async def GetPoolStats(
        self, request: pb.GetPoolStatsRequest, context: Context
    ) -> pb.GetPoolStatsResponse:
        stats = await self._manager.get_pool_stats(request.network)
        return pb.GetPoolStatsResponse(
            networks=[
                pb.NetworkStats(
                    **same_fields(s, *_STATS_FIELDS),
                    reuse_guard=s.reuse_confirmations is not None,
                    reuse_confirmations=s.reuse_confirmations or 0,
                    scanned_height=s.scanned_height or 0,
                    watcher_report_time=to_timestamp(s.watcher_report_time),
                )
                for s in stats
            ]
        )

    async def AddWallets(
        self, request: pb.AddWalletsRequest, context: Context
    ) -> pb.AddWalletsResponse:
        result = await self._manager.add_wallets(request.network, list(request.addresses))
        return pb.AddWalletsResponse(added=result.added, duplicates=result.duplicates)

    async def DisableWallet(
        self, request: pb.DisableWalletRequest, context: Context
    ) -> pb.DisableWalletResponse:
        reason = parse_text(request.reason, "reason", 500)
        wallet = await self._manager.set_wallet_disabled(request.address, reason)
        return pb.DisableWalletResponse(wallet=wallet_to_pb(wallet))

    async def EnableWallet(
        self, request: pb.EnableWalletRequest, context: Context
    ) -> pb.EnableWalletResponse:
        wallet = await self._manager.set_wallet_disabled(request.address, None)
        return pb.EnableWalletResponse(wallet=wallet_to_pb(wallet))

    async def ListWallets(
        self, request: pb.ListWalletsRequest, context: Context
    ) -> pb.ListWalletsResponse:
        wallets, next_token = await self._manager.list_wallets(
            request.network, parse_state(request.state), request.page_size, request.page_token
        )
        return pb.ListWalletsResponse(
            wallets=[wallet_to_pb(w) for w in wallets], next_page_token=next_token
        )

    async def GetWalletHistory(
        self, request: pb.GetWalletHistoryRequest, context: Context
    ) -> pb.GetWalletHistoryResponse:
        history = await self._manager.get_wallet_history(request.address)
        return pb.GetWalletHistoryResponse(
            address=request.address.strip(),
            assignments=[
                pb.WalletAssignment(
                    order_id=str(a.order_id),
                    network=a.network,
                    assign_time=to_timestamp(a.assign_time),
                    release_time=to_timestamp(a.release_time),
                )
                for a in history
            ],
        )

    async def WatchHandOffs(
        self, request: pb.WatchHandOffsRequest, context: Context
    ) -> AsyncIterator[pb.WatchHandOffsResponse]:
        async with self._manager.hand_offs.watch() as hand_offs:
            async for hand_off in hand_offs:
                yield pb.WatchHandOffsResponse(
                    order_id=str(hand_off.order_id),
                    address=hand_off.address,
                    network=hand_off.network,
                )

    async def ReportDeposits(
        self, request: pb.ReportDepositsRequest, context: Context
    ) -> pb.ReportDepositsResponse:
        reported = [
            chain_deposit_from_pb(d, f"deposits[{i}]") for i, d in enumerate(request.deposits)
        ]
        retractions = [
            retraction_from_pb(r, f"reverted[{i}]") for i, r in enumerate(request.reverted)
        ]
        outcome = await self._manager.report_deposits(
            request.network,
            reported,
            request.scanned_height,
            request.chain_height,
            retractions,
            request.finalized_height,
        )
        return pb.ReportDepositsResponse(
            **same_fields(outcome, *_OUTCOME_FIELDS),
            # A count per disposition, in the field of its name.
            **{d.lower(): outcome.dispositions.get(d, 0) for d in Disposition},
        )

    async def ListLateDeposits(
        self, request: pb.ListLateDepositsRequest, context: Context
    ) -> pb.ListLateDepositsResponse:
        late, next_token = await self._manager.list_late_deposits(
            request.network, request.page_size, request.page_token
        )
        return pb.ListLateDepositsResponse(
            deposits=[deposit_to_pb(d) for d in late], next_page_token=next_token
        )

    async def _deposits_after(
        self,
        page: Callable[[int, int], Awaitable[list[Deposit]]],
        cursor: int,
        field: str,
        page_size: int,
    ) -> list[pb.Deposit]:
        """A page of deposits after `cursor`, a bigint of the database (`field`)."""
        if cursor >= 2**63:
            raise InvalidArgument(field, "beyond any deposit's")
        return [deposit_to_pb(d) for d in await page(cursor, page_size)]

    async def ListDeposits(
        self, request: pb.ListDepositsRequest, context: Context
    ) -> pb.ListDepositsResponse:
        recorded = await self._deposits_after(
            self._manager.list_deposits, request.after_id, "after_id", request.page_size
        )
        return pb.ListDepositsResponse(deposits=recorded)

    async def ListAssets(
        self, request: pb.ListAssetsRequest, context: Context
    ) -> pb.ListAssetsResponse:
        assets = self._manager.list_assets(request.network)
        return pb.ListAssetsResponse(assets=[asset_to_pb(a) for a in assets])

    async def ListDepositChanges(
        self, request: pb.ListDepositChangesRequest, context: Context
    ) -> pb.ListDepositChangesResponse:
        changed = await self._deposits_after(
            self._manager.list_deposit_changes,
            request.after_change,
            "after_change",
            request.page_size,
        )
        return pb.ListDepositChangesResponse(deposits=changed)
