"""Bearer tokens mapped to named principals with a role; compared in constant time."""

import contextvars
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.config import ConfigError
from shared.errors import PermissionDenied, Unauthenticated

CLIENT, OPERATOR, SERVICE = "client", "operator", "service"
# Systems around the office that follow the order event log (read-only).
SUBSCRIBER = "subscriber"
# The chain watchers that report deposits and scanned heights to the pool.
WATCHER = "watcher"
ROLES = frozenset({CLIENT, OPERATOR, SERVICE, SUBSCRIBER, WATCHER})


@dataclass(frozen=True)
class Principal:
    name: str
    role: str


SYSTEM = Principal(name="system", role="system")
ANONYMOUS = Principal(name="anonymous", role="anonymous")

# Who made the call being served; set by the RPC interceptor for the handler's task.
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "current_principal", default=ANONYMOUS
)


def parse_token_entries(lines: Iterable[str], source: str) -> dict[str, Principal]:
    """`name:role:token` entries (blank lines and `#` comments skipped)."""
    tokens: dict[str, Principal] = {}
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        name, _, rest = entry.partition(":")
        role, _, token = rest.partition(":")
        if not (name and token):
            raise ConfigError(f"{source} entry {number}: expected name:role:token")
        if role not in ROLES:
            raise ConfigError(f"{source} entry {number}: role must be one of {sorted(ROLES)}")
        tokens[token] = Principal(name, role)
    return tokens


# The variables that each give one credential of a role (more come from AUTH_TOKENS).
_TOKEN_VARIABLES = (
    ("OPERATOR_TOKEN", Principal("operator", OPERATOR)),
    ("CLIENT_TOKEN", Principal("client", CLIENT)),
    ("SERVICE_TOKEN", Principal("order_service", SERVICE)),
    ("SUBSCRIBER_TOKEN", Principal("subscriber", SUBSCRIBER)),
    ("WATCHER_TOKEN", Principal("watcher", WATCHER)),
)


def load_tokens(environ: Mapping[str, str] = os.environ) -> dict[str, Principal]:
    """Credentials from OPERATOR_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN, SUBSCRIBER_TOKEN,
    WATCHER_TOKEN, AUTH_TOKENS and AUTH_TOKENS_FILE (entries `name:role:token`, comma- or
    line-separated)."""
    tokens: dict[str, Principal] = {}
    for variable, principal in _TOKEN_VARIABLES:
        if environ.get(variable, "").strip():
            tokens[environ[variable].strip()] = principal
    tokens |= parse_token_entries(environ.get("AUTH_TOKENS", "").split(","), "AUTH_TOKENS")
    path = environ.get("AUTH_TOKENS_FILE", "").strip()
    if path:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"AUTH_TOKENS_FILE: cannot read {path}: {exc.strerror}") from None
        tokens |= parse_token_entries(lines, "AUTH_TOKENS_FILE")
    return tokens


def missing_roles(tokens: Mapping[str, Principal], needed: Mapping[str, str]) -> list[str]:
    """One sentence for each role in `needed` (role -> why the service cannot work without
    it) that no credential in `tokens` has, naming where such a credential comes from.
    Roles not in `needed` are optional."""
    present = {principal.role for principal in tokens.values()}
    problems = []
    for role, reason in needed.items():
        if role in present:
            continue
        variables = [variable for variable, p in _TOKEN_VARIABLES if p.role == role]
        sources = " or ".join([*variables, f"a name:{role}:token entry in AUTH_TOKENS"])
        problems.append(
            f"no credential for the {role!r} role ({reason}): set {sources} (or AUTH_TOKENS_FILE)"
        )
    return problems


def require_credentials(
    tokens: Mapping[str, Principal], needed: Mapping[str, str], problems: Sequence[str] = ()
) -> None:
    """Refuse to start (ConfigError, one line) when a needed role has no credential or any of
    `problems` (other missing credentials, already worded) applies."""
    found = [*problems, *missing_roles(tokens, needed)]
    if found:
        raise ConfigError("; ".join(found))


class Authenticator:
    """Decides who a call comes from and whether that role may call the method."""

    def __init__(
        self, tokens: Mapping[str, Principal], policy: Mapping[str, frozenset[str]]
    ) -> None:
        # policy: full method name -> roles allowed; methods not listed (health, reflection)
        # are open to anyone.
        self._tokens = [(token.encode(), principal) for token, principal in tokens.items() if token]
        self._policy = policy

    def authorize(self, method: str, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        roles = self._policy.get(method)
        if roles is None:
            return ANONYMOUS
        token = _bearer_token(metadata)
        if token is None:
            raise Unauthenticated("missing credentials: send 'authorization: Bearer <token>'")
        principal = self._lookup(token)
        if principal is None:
            raise PermissionDenied("the token is not valid")
        if principal.role not in roles:
            raise PermissionDenied(f"role {principal.role!r} may not call this method")
        return principal

    def _lookup(self, token: str) -> Principal | None:
        found = None
        candidate = token.encode()
        # Compare with every token, so the time taken does not tell which one was close.
        for known, principal in self._tokens:
            if hmac.compare_digest(candidate, known):
                found = principal
        return found


def method_policy(
    service_name: str, method_names: Iterable[str], roles: Mapping[str, frozenset[str]]
) -> dict[str, frozenset[str]]:
    """Full method names -> roles; every method of the service must be given its roles, so a
    new RPC cannot be left open by accident."""
    missing = set(method_names) - set(roles)
    if missing:
        raise ValueError(f"no roles for {service_name} methods: {sorted(missing)}")
    return {f"/{service_name}/{method}": allowed for method, allowed in roles.items()}


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key.lower() != "authorization":
            continue
        text = value.decode() if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise Unauthenticated("malformed authorization header: expected 'Bearer <token>'")
    return None
