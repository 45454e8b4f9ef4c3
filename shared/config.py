"""Reading configuration from environment variables, with errors that name the variable."""

import os
import re
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

S = TypeVar("S")
N = TypeVar("N", int, float)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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


# ASCII digits only: `int` and `float` also take other scripts' digits, `_` separators, `nan`
# and `inf`, none of which an operator means.
_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PORT_MAX = 65535


def _env_number(
    name: str, default: N, minimum: N, maximum: N, parse: Callable[[str], N], whole: bool
) -> N:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    pattern, kind = (_WHOLE, "a whole number") if whole else (_DECIMAL, "a number")
    if pattern.fullmatch(raw):
        value = parse(raw)
        if minimum <= value <= maximum:
            return value
    raise ConfigError(f"{name} must be {kind} from {minimum:g} to {maximum:g}, got {raw!r}")


def env_float(name: str, default: float, *, minimum: float = 0.0, maximum: float) -> float:
    """A decimal setting within [minimum, maximum] (the range README documents)."""
    return _env_number(name, default, minimum, maximum, float, whole=False)


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int) -> int:
    """A whole-number setting within [minimum, maximum] (the range README documents)."""
    return _env_number(name, default, minimum, maximum, int, whole=True)


def _host_port(name: str, value: str, also: str = "") -> str:
    host, _, port = value.rpartition(":")
    if not host or not _WHOLE.fullmatch(port) or port.startswith(("+", "-")):
        raise ConfigError(f"{name} must be host:port{also}, got {value!r}")
    if int(port) > _PORT_MAX:
        raise ConfigError(f"{name}: the port must be 0 to {_PORT_MAX}, got {value!r}")
    return value


def env_listen_address(name: str, default: str) -> str:
    """host:port to listen on (port 0: a free one)."""
    return _host_port(name, env_str(name, default))


def env_address(name: str, default: str) -> str | None:
    """host:port, or None when the variable is `off`."""
    value = env_str(name, default)
    if value.lower() == "off":
        return None
    return _host_port(name, value, " or off")


def env_flag(name: str) -> bool:
    """An on/off switch: 1, true, yes or on; 0, false, no or off; unset is off."""
    value = env_str(name, "off").lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0 (true/false, yes/no, on/off), got {value!r}")


def env_database_url(*names: str) -> str | None:
    """The first of `names` that is set: a postgresql:// URL whose connect_timeout is
    seconds. Checked here, so that a bad one stops the service naming its variable (the URL
    itself is never printed: it may carry a password)."""
    from shared.db import split_hosts  # shared.db imports this module

    for name in names:
        value = env_optional(name)
        if value is None:
            continue
        if not value.startswith(("postgresql://", "postgres://")):
            scheme = value.partition("://")[0] if "://" in value else value[:12]
            raise ConfigError(f"{name} must be a postgresql:// URL, got one starting {scheme!r}")
        try:
            split_hosts(value)
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        return value
    return None


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
        level = env_str("LOG_LEVEL", "INFO")
        if level.upper() not in LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        settings = load()
        configure_logging(name, level)
        # uvloop: asyncpg's protocol and gRPC's callbacks cost less CPU on its event loop.
        uvloop.run(serve(settings))
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except StartupRefused as exc:
        print(f"{name}: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
