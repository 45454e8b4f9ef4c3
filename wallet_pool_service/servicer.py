"""gRPC face of the pool: protobuf in, use case, protobuf out. Errors are mapped by the
shared interceptor."""

from typing import Any

import grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pb_grpc
from shared.validation import parse_uuid
from wallet_pool_service.manager import WalletPoolManager

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["WalletPoolService"].full_name
OPERATOR_METHODS = frozenset({f"/{SERVICE_NAME}/AddWallets"})

Context = grpc.aio.ServicerContext[Any, Any]


class WalletPoolServicer(pb_grpc.WalletPoolServiceServicer):
    def __init__(self, manager: WalletPoolManager) -> None:
        self._manager = manager

    async def AllocateWallet(
        self, request: pb.AllocateWalletRequest, context: Context
    ) -> pb.AllocateWalletResponse:
        order_id = parse_uuid(request.order_id, "order_id")
        allocation = await self._manager.allocate_wallet(order_id, request.network)
        if allocation.address is not None:
            return pb.AllocateWalletResponse(address=allocation.address)
        return pb.AllocateWalletResponse(queue_position=allocation.queue_position or 0)

    async def ReleaseWallet(
        self, request: pb.ReleaseWalletRequest, context: Context
    ) -> pb.ReleaseWalletResponse:
        order_id = parse_uuid(request.order_id, "order_id")
        release = await self._manager.release_wallet(order_id, request.address)
        return pb.ReleaseWalletResponse(released=release.released, dequeued=release.dequeued)

    async def GetPoolStats(
        self, request: pb.GetPoolStatsRequest, context: Context
    ) -> pb.GetPoolStatsResponse:
        stats = await self._manager.get_pool_stats(request.network)
        return pb.GetPoolStatsResponse(
            networks=[
                pb.NetworkStats(
                    network=s.network,
                    total=s.total,
                    available=s.available,
                    allocated=s.allocated,
                    queued=s.queued,
                )
                for s in stats
            ]
        )

    async def AddWallets(
        self, request: pb.AddWalletsRequest, context: Context
    ) -> pb.AddWalletsResponse:
        result = await self._manager.add_wallets(request.network, list(request.addresses))
        return pb.AddWalletsResponse(added=result.added, duplicates=result.duplicates)
