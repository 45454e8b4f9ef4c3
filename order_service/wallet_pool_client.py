"""The order service's view of the wallet pool service, and its gRPC adapter."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pb_grpc
from order_service.domain import DepositDisposition, DepositStatus, OrderDeposit, PoolDeposit
from shared.channels import service_config
from shared.client_metrics import ClientCall
from shared.grpc_server import current_deadline
from shared.logs import current_request_id
from shared.proto import from_pb, same_fields, to_pb
from shared.timestamps import from_timestamp, to_timestamp
from shared.tls import ClientTls

_SERVICE = pb.DESCRIPTOR.services_by_name["WalletPoolService"].full_name

# Every call is safe to repeat (allocate and release are idempotent; the rest read).
_CHANNEL_OPTIONS = [
    ("grpc.service_config", service_config([_SERVICE])),
    ("grpc.enable_retries", 1),
    # Reconnect quickly once the pool is back, instead of gRPC's default of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


# A watch stream is renewed this often, so that no call is without a deadline.
_WATCH_SECONDS = 300.0
# Calls to the pool at once; more wait for a slot, and that wait counts against their deadline.
MAX_CONCURRENT_CALLS = 8
# Of the time a caller gave the call being served, what is kept for answering after the pool
# call (writing its outcome and the response).
ANSWER_RESERVE_SECONDS = 0.2


@dataclass(frozen=True)
class PoolAllocation:
    address: str | None
    queue_position: int | None


# The pool's dispositions and statuses (a pool of the previous release sends none: its
# deposits were all counted, confirmed coin deposits).
_DISPOSITIONS = from_pb(to_pb(DepositDisposition, pb.DepositDisposition, "DEPOSIT_DISPOSITION_"))
_STATUSES = from_pb(to_pb(DepositStatus, pb.DepositStatus, "DEPOSIT_STATUS_"))


def _pool_deposit(d: pb.Deposit) -> PoolDeposit:
    """An attributed deposit as the pool shows it (a pool of the previous release sends no
    asset, disposition or status: its deposits were counted, confirmed coin deposits)."""
    return PoolDeposit(
        pool_id=d.id,
        order_id=uuid.UUID(d.order_id),
        deposit=OrderDeposit(
            **same_fields(d, "txid", "index", "address", "block_height", "confirmations"),
            amount=Decimal(d.amount),
            block_time=from_timestamp(d.block_time),
            late=d.attribution == pb.DEPOSIT_ATTRIBUTION_LATE,
            asset=d.asset if d.disposition != pb.DEPOSIT_DISPOSITION_UNKNOWN_ASSET else None,
            disposition=_DISPOSITIONS.get(d.disposition, DepositDisposition.COUNTED),
            token_contract=d.token_contract or None,
            required_confirmations=d.required_confirmations or None,
            status=_STATUSES.get(d.status, DepositStatus.CONFIRMED),
        ),
        change=d.change_sequence,
    )


class WalletPoolError(Exception):
    """A call to the wallet pool failed; `code` is the gRPC status code's name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details

    @property
    def refused(self) -> bool:
        """The pool answered and refused (as opposed to being unreachable)."""
        return self.code in ("FAILED_PRECONDITION", "INVALID_ARGUMENT", "NOT_FOUND")


class WalletPoolGateway(Protocol):
    async def allocate(
        self, order_id: uuid.UUID, network: str, asset: str = ""
    ) -> PoolAllocation: ...
    async def release(self, order_id: uuid.UUID, address: str, final_time: datetime) -> int: ...
    def watch_hand_offs(self) -> AsyncIterator[tuple[uuid.UUID, str]]: ...
    async def deposits_after(self, after_id: int, limit: int) -> tuple[list[PoolDeposit], int]: ...
    async def deposit_changes(
        self, after_change: int, limit: int
    ) -> tuple[list[PoolDeposit], int]: ...


class GrpcWalletPoolGateway:
    """Every call, the wait for one of MAX_CONCURRENT_CALLS slots included, ends by its
    deadline: `timeout_seconds`, or sooner when the call being served must answer its own
    caller sooner (shared.grpc_server.current_deadline, less ANSWER_RESERVE_SECONDS), or when
    `cut_off` was called. A call that ends without an answer raises WalletPoolError."""

    def __init__(
        self, channel: grpc.aio.Channel, timeout_seconds: float, token: str | None
    ) -> None:
        self._channel = channel
        self._stub = pb_grpc.WalletPoolServiceStub(channel)
        self._timeout = timeout_seconds
        self._authorization = (("authorization", f"Bearer {token}"),) if token else ()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        self._calls: set[grpc.aio.Call] = set()
        self._cut_off_at: float | None = None

    @classmethod
    def connect(
        cls,
        target: str,
        timeout_seconds: float,
        token: str | None,
        tls: ClientTls | None = None,
        interceptors: Sequence[Any] = (),
    ) -> "GrpcWalletPoolGateway":
        """`interceptors`: the channel's (tracing's)."""
        chain = list(interceptors) or None
        if tls is None:
            channel = grpc.aio.insecure_channel(
                target, options=_CHANNEL_OPTIONS, interceptors=chain
            )
        else:
            channel = grpc.aio.secure_channel(
                target,
                tls.credentials(),
                options=[*_CHANNEL_OPTIONS, *tls.options()],
                interceptors=chain,
            )
        return cls(channel, timeout_seconds, token)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        request_id = current_request_id.get()
        if request_id:
            return (*self._authorization, ("x-request-id", request_id))
        return self._authorization

    def _deadline(self) -> float:
        """When the next call must end, on the event loop's clock."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        caller = current_deadline.get()
        if caller is not None:
            deadline = min(deadline, caller - ANSWER_RESERVE_SECONDS)
        if self._cut_off_at is not None:
            deadline = min(deadline, self._cut_off_at)
        return deadline

    async def _call(self, method_name: str, request: Message) -> Any:
        loop = asyncio.get_running_loop()
        deadline = self._deadline()
        try:
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        except TimeoutError:
            raise WalletPoolError(
                "DEADLINE_EXCEEDED", "no call to the wallet pool could start within the deadline"
            ) from None
        try:
            # A cut-off may have come while this call waited for its slot.
            left = min(deadline, self._cut_off_at or deadline) - loop.time()
            if left <= 0:
                raise WalletPoolError("DEADLINE_EXCEEDED", "no time left to call the wallet pool")
            method = getattr(self._stub, method_name)
            call = method(request, timeout=left, metadata=self._metadata())
            measured = ClientCall("unary", _SERVICE, method_name)
            self._calls.add(call)
            code = grpc.StatusCode.UNKNOWN
            try:
                response = await call
                code = grpc.StatusCode.OK
                return response
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                raise WalletPoolError(code.name, exc.details() or "") from None
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                # cut_off cancelled the call, not this task: the call ends without an answer.
                task = asyncio.current_task()
                if call.cancelled() and task is not None and not task.cancelling():
                    raise WalletPoolError("CANCELLED", "cut off: the service is stopping") from None
                raise
            finally:
                measured.ended(code)
                self._calls.discard(call)
        finally:
            self._slots.release()

    def cut_off(self, within_seconds: float) -> None:
        """End every call (and wait for a slot) by `within_seconds` from now: for a graceful
        stop, so that the calls being served answer before their grace period ends."""
        loop = asyncio.get_running_loop()
        self._cut_off_at = loop.time() + within_seconds

        def cancel_calls() -> None:
            for call in list(self._calls):
                call.cancel()

        loop.call_at(self._cut_off_at, cancel_calls)

    async def allocate(self, order_id: uuid.UUID, network: str, asset: str = "") -> PoolAllocation:
        request = pb.AllocateWalletRequest(order_id=str(order_id), network=network, asset=asset)
        response = await self._call("AllocateWallet", request)
        if response.WhichOneof("result") == "address":
            return PoolAllocation(address=response.address, queue_position=None)
        return PoolAllocation(address=None, queue_position=response.queue_position or None)

    async def release(self, order_id: uuid.UUID, address: str, final_time: datetime) -> int:
        """The pool's deposit change number after the release (0: nothing to wait for, or
        a pool of the previous release, which does not say)."""
        request = pb.ReleaseWalletRequest(
            order_id=str(order_id), address=address, final_time=to_timestamp(final_time)
        )
        response = await self._call("ReleaseWallet", request)
        return int(response.deposit_change)

    async def deposits_after(self, after_id: int, limit: int) -> tuple[list[PoolDeposit], int]:
        """The attributed deposits the pool recorded after `after_id` (at most `limit` read),
        and the last id read."""
        request = pb.ListDepositsRequest(after_id=after_id, page_size=limit)
        response = await self._call("ListDeposits", request)
        attributed = [_pool_deposit(d) for d in response.deposits if d.order_id]
        last = response.deposits[-1].id if response.deposits else after_id
        return attributed, last

    async def deposit_changes(self, after_change: int, limit: int) -> tuple[list[PoolDeposit], int]:
        """The attributed deposits as they are now whose last change in the pool is after
        `after_change` (at most `limit` read), and the last change read."""
        request = pb.ListDepositChangesRequest(after_change=after_change, page_size=limit)
        response = await self._call("ListDepositChanges", request)
        attributed = [_pool_deposit(d) for d in response.deposits if d.order_id]
        last = response.deposits[-1].change_sequence if response.deposits else after_change
        return attributed, last

    async def watch_hand_offs(self) -> AsyncIterator[tuple[uuid.UUID, str]]:
        """(order id, address) of each wallet the pool hands to a waiting order, until the
        stream ends (the pool stops, or the stream's deadline passes: watch again)."""
        measured = ClientCall("server_stream", _SERVICE, "WatchHandOffs")
        call = self._stub.WatchHandOffs(
            pb.WatchHandOffsRequest(), timeout=_WATCH_SECONDS, metadata=self._metadata()
        )
        # Left before its end (the caller stopped reading): CANCELLED.
        code = grpc.StatusCode.CANCELLED
        try:
            async for hand_off in call:
                yield uuid.UUID(hand_off.order_id), hand_off.address
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise WalletPoolError(code.name, exc.details() or "") from None
        finally:
            measured.ended(code)
            call.cancel()

    async def close(self) -> None:
        await self._channel.close(None)
