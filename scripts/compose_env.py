"""Writes .env for docker compose with fresh random secrets, unless it exists."""

import secrets
from pathlib import Path

SECRETS = (
    "POSTGRES_PASSWORD",
    "ORDER_DB_PASSWORD",
    "WALLET_POOL_DB_PASSWORD",
    "OPERATOR_TOKEN",
    "CLIENT_TOKEN",
    "SERVICE_TOKEN",
    "WATCHER_TOKEN",
)


def main() -> None:
    path = Path(__file__).resolve().parents[1] / ".env"
    if path.exists():
        print(f"{path} exists; keeping it")
        return
    path.write_text("".join(f"{name}={secrets.token_urlsafe(24)}\n" for name in SECRETS))
    path.chmod(0o600)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
