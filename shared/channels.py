"""The service config of our gRPC clients' channels: which answers a channel tries again by
itself, on another replica when there is one."""

import json
from collections.abc import Sequence

# UNAVAILABLE: no replica took the call, or the database was unreachable. CANCELLED: a
# stopping server answers it, not UNAVAILABLE, for a call it had received but not yet handed
# to a handler (grpc/grpc#41785, open: core ends those calls as if the caller had cancelled
# them), which a rolling restart meets under load. A call the caller cancels is never
# retried. Only for methods that are safe to repeat.
RETRYABLE_CODES = ("UNAVAILABLE", "CANCELLED")


def service_config(retried: Sequence[str], not_retried: Sequence[tuple[str, str]] = ()) -> str:
    """Round robin over every address the target resolves to; every method of the `retried`
    services (full names) tried up to 3 times on RETRYABLE_CODES, except the (service,
    method) pairs in `not_retried`, which the channel sends once (gRPC's transparent retry of
    a call no server saw aside). Channels need `grpc.enable_retries` (on by default)."""
    policy = {
        "maxAttempts": 3,
        "initialBackoff": "0.05s",
        "maxBackoff": "0.5s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": list(RETRYABLE_CODES),
    }
    methods = []
    if retried:
        methods.append({"name": [{"service": s} for s in retried], "retryPolicy": policy})
    if not_retried:
        methods.append({"name": [{"service": s, "method": m} for s, m in not_retried]})
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": methods})
