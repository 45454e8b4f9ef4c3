"""`python -m bench.pool_with_addresses`: the wallet pool service with its address module
loaded from the file BENCH_ADDRESSES_FILE names (an older `addresses.py` taken from git), so
that `bench.keccak` can compare two implementations served the same way in one run."""

import importlib.util
import os
import sys

_spec = importlib.util.spec_from_file_location(
    "wallet_pool_service.addresses", os.environ["BENCH_ADDRESSES_FILE"]
)
assert _spec is not None and _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
# In place before the service imports it: domain.py takes its checks from this module.
sys.modules[_spec.name] = _module
_spec.loader.exec_module(_module)

from wallet_pool_service.app import main  # noqa: E402

main()
