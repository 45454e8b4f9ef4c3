"""The assets of each network: its coin and the tokens the office takes, identified by
contract address. Read the same way by both services (the order service checks an order's
asset and amount against them, the pool resolves a deposit's contract to one); no I/O here.

An asset's code is '' for the network's coin and a symbol ('USDT') for a token.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from shared.addresses import address_problem, canonical_address
from shared.config import ConfigError, env_str
from shared.errors import InvalidArgument

ASSETS_VARIABLE = "ASSETS"
MAX_DECIMALS = 18  # what an amount may carry at all (shared/validation.py)
MAX_CONFIRMATIONS = 10_000
# Networks whose addresses receive tokens besides the coin.
TOKEN_NETWORKS = frozenset({"ETH", "TRON"})
_CODE = re.compile(r"^[A-Z][A-Z0-9]{1,11}$")


@dataclass(frozen=True)
class Asset:
    network: str
    # '' for the network's coin; a token's symbol otherwise.
    code: str
    # The coin's or token's symbol as shown ('ETH', 'USDT').
    symbol: str
    # The token's contract in the pool's canonical form; None for the coin.
    contract: str | None
    decimals: int
    # Smaller deposits are dust: recorded, never counted, never holding a wallet out.
    min_deposit: Decimal
    # Confirmations after which a deposit counts as confirmed.
    confirmations: int

    @property
    def native(self) -> bool:
        return self.contract is None

    @property
    def key(self) -> tuple[str, str]:
        return self.network, self.code


# The coins: decimals of their smallest unit; minimums a little above what sending costs;
# confirmations as the reuse guard's (BTC 3 blocks ~30 min; ETH two epochs, finality; TRON
# 20 blocks, past solidification).
NATIVE_ASSETS = (
    Asset("BTC", "", "BTC", None, 8, Decimal("0.00005"), 3),
    Asset("ETH", "", "ETH", None, 18, Decimal("0.0005"), 64),
    Asset("TRON", "", "TRX", None, 6, Decimal("1"), 20),
)
# The mainnet stablecoin contracts exchange offices take most.
TOKEN_ASSETS = (
    Asset("TRON", "USDT", "USDT", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", 6, Decimal("1"), 20),
    Asset("ETH", "USDT", "USDT", "0xdac17f958d2ee523a2206206994597c13d831ec7", 6, Decimal("1"), 64),
    Asset("ETH", "USDC", "USDC", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", 6, Decimal("1"), 64),
)
DEFAULT_ASSETS = NATIVE_ASSETS + TOKEN_ASSETS


class AssetTable:
    """The assets of the supported networks, looked up by code and by contract."""

    def __init__(self, assets: Iterable[Asset]) -> None:
        self.assets = tuple(sorted(assets, key=lambda a: (a.network, a.code)))
        self._by_code = {a.key: a for a in self.assets}
        self._by_contract = {(a.network, a.contract): a for a in self.assets if a.contract}

    def of_network(self, network: str) -> list[Asset]:
        return [a for a in self.assets if a.network == network]

    def get(self, network: str, code: str) -> Asset | None:
        return self._by_code.get((network, code))

    def by_contract(self, network: str, contract: str) -> Asset | None:
        """The asset of a contract in canonical form ('' : the coin); None if unknown."""
        if not contract:
            return self._by_code.get((network, ""))
        return self._by_contract.get((network, contract))

    def order_asset(self, network: str, code: str, field: str = "asset") -> Asset:
        """The asset an order asks for ('' or the coin's symbol: the coin), or
        InvalidArgument naming the field and what the network takes."""
        wanted = code.strip().upper()
        native = self._by_code.get((network, ""))
        if native is not None and wanted == native.symbol:
            wanted = ""
        asset = self._by_code.get((network, wanted))
        if asset is None:
            known = ", ".join(a.symbol for a in self.of_network(network)) or "none"
            raise InvalidArgument(
                field, f"{code[:16]!r} is not an asset of {network}; {network} takes: {known}"
            )
        return asset


def check_scale(amount: Decimal, asset: Asset, field: str) -> Decimal:
    """The amount, if the asset's smallest unit can express it (trailing zeros aside; else
    InvalidArgument)."""
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > asset.decimals:
        raise InvalidArgument(
            field,
            f"{amount} has more decimals than {asset.network} {asset.symbol} has "
            f"({asset.decimals})",
        )
    return amount


def _fail(entry: str, problem: str) -> ConfigError:
    return ConfigError(f"{ASSETS_VARIABLE}: {entry!r}: {problem}")


def _parse_entry(entry: str, networks: tuple[str, ...]) -> tuple[tuple[str, str], Asset | None]:
    """One `NETWORK:CODE:CONTRACT:DECIMALS:MIN_DEPOSIT:CONFIRMATIONS` entry (CODE and
    CONTRACT empty: the coin), or `NETWORK:CODE:off`; the key and the asset (None: off)."""
    parts = [p.strip() for p in entry.split(":")]
    network = parts[0].upper()
    if network not in networks:
        raise _fail(entry, f"{network!r} is not a supported network ({', '.join(networks)})")
    code = parts[1].upper() if len(parts) > 1 else ""
    if code and not _CODE.match(code):
        raise _fail(entry, f"{code!r} is not an asset code (2-12 letters and digits)")
    if len(parts) == 3 and parts[2].lower() == "off":
        if not code:
            raise _fail(entry, "a network's coin cannot be turned off")
        return (network, code), None
    if len(parts) != 6:
        raise _fail(
            entry,
            "expected NETWORK:CODE:CONTRACT:DECIMALS:MIN_DEPOSIT:CONFIRMATIONS or NETWORK:CODE:off",
        )
    contract = parts[2]
    if bool(code) != bool(contract):
        raise _fail(entry, "a token needs a code and a contract; the coin has neither")
    if contract and network not in TOKEN_NETWORKS:
        raise _fail(entry, f"{network} has no tokens")
    if contract:
        problem = address_problem(network, contract)
        if problem:
            raise _fail(entry, f"contract {contract!r} is not a {network} address: {problem}")
    if not parts[3].isdigit() or int(parts[3]) > MAX_DECIMALS:
        raise _fail(entry, f"decimals must be a whole number from 0 to {MAX_DECIMALS}")
    decimals = int(parts[3])
    try:
        minimum = Decimal(parts[4])
    except InvalidOperation:
        raise _fail(entry, f"minimum deposit {parts[4]!r} is not a decimal") from None
    if not minimum.is_finite() or minimum <= 0:
        raise _fail(entry, "the minimum deposit must be greater than zero")
    exponent = minimum.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > decimals:
        raise _fail(entry, f"the minimum deposit has more than {decimals} decimals")
    if not parts[5].isdigit() or not 1 <= int(parts[5]) <= MAX_CONFIRMATIONS:
        raise _fail(entry, f"confirmations must be a whole number from 1 to {MAX_CONFIRMATIONS}")
    symbol = code or next(a.symbol for a in NATIVE_ASSETS if a.network == network)
    asset = Asset(
        network,
        code,
        symbol,
        canonical_address(contract) if contract else None,
        decimals,
        minimum,
        int(parts[5]),
    )
    return (network, code), asset


def assets_from_env(networks: tuple[str, ...]) -> AssetTable:
    """The ASSETS setting, read the same way by both services (so both refuse the same bad
    value at start)."""
    return parse_assets(env_str(ASSETS_VARIABLE, ""), networks)


def parse_assets(raw: str, networks: tuple[str, ...]) -> AssetTable:
    """The built-in assets of `networks`, changed by the ASSETS setting: comma-separated
    entries that add a token, replace a built-in one (same network and code), or turn one
    off. A token's contract must be an address of its network, and is kept in its canonical
    spelling. ConfigError (one line naming the variable and the entry) on anything wrong."""
    assets: dict[tuple[str, str], Asset] = {
        a.key: a for a in DEFAULT_ASSETS if a.network in networks
    }
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        key, asset = _parse_entry(entry, networks)
        if asset is None:
            assets.pop(key, None)
        else:
            assets[key] = asset
    contracts: dict[tuple[str, str], str] = {}
    for asset in assets.values():
        if asset.contract is None:
            continue
        other = contracts.setdefault((asset.network, asset.contract), asset.code)
        if other != asset.code:
            raise ConfigError(
                f"{ASSETS_VARIABLE}: {asset.network} contract {asset.contract} is both "
                f"{other} and {asset.code}"
            )
    return AssetTable(assets.values())
