"""Bearer tokens mapped to named principals with a role; compared in constant time."""

import contextvars
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.errors import PermissionDenied, Unauthenticated


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


class Authenticator:
    """Decides who a call comes from and whether that role may call the method."""

    def __init__(
        self, tokens: Mapping[str, Principal], policy: Mapping[str, frozenset[str]]
    ) -> None:
        # policy: full method name -> roles allowed; methods not listed are open to anyone.
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


def operator_authenticator(operator_token: str | None, methods: frozenset[str]) -> Authenticator:
    """Only the operator token may call `methods`; everything else is open."""
    tokens = {operator_token: Principal("operator", "operator")} if operator_token else {}
    return Authenticator(tokens, dict.fromkeys(methods, frozenset({"operator"})))
