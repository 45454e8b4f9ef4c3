"""Reading configuration from environment variables, with errors that name the variable."""

import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

S = TypeVar("S")
N = TypeVar("N", int, float)


class ConfigError(Exception):
    pass


class StartupRefused(Exception):
    """What the service finds at start-up (not in its configuration) keeps it from doing its
    job; it exits naming it."""


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


def env_optional(*names: str) -> str | None:
    """The first of `names` that is set and not empty."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _env_number(name: str, default: N, minimum: N, parse: Callable[[str], N], kind: str) -> N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    return _env_number(name, default, minimum, float, "a number")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    return _env_number(name, default, minimum, int, "a whole number")


def env_address(name: str, default: str) -> str | None:
    """host:port, or None when the variable is `off`."""
    value = env_str(name, default)
    if value.lower() == "off":
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{name} must be host:port or off, got {value!r}")
    return value


def env_list(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    return tuple(item.strip().upper() for item in raw.split(",") if item.strip())


def environment() -> str:
    """`development` (the default: embedded database, demo data) or `production`."""
    value = env_str("APP_ENV", "development").lower()
    if value not in ("development", "production"):
        raise ConfigError(f"APP_ENV must be development or production, got {value!r}")
    return value


def run_service(
    name: str, load: Callable[[], S], serve: Callable[[S], Coroutine[Any, Any, None]]
) -> None:
    """Entry point of a service: settings, JSON logs, serve; a configuration error is one line."""
    from shared.logs import configure_logging

    try:
        settings = load()
        configure_logging(name, env_str("LOG_LEVEL", "INFO"))
        # uvloop: asyncpg's protocol and gRPC's callbacks cost less CPU on its event loop.
        uvloop.run(serve(settings))
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except StartupRefused as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
