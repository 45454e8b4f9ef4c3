"""Every variable the code reads, and every one docker-compose.yml sets, is in README's table."""

import re

from tests.databases import ROOT

CODE_DIRS = ["shared", "order_service", "wallet_pool_service"]


def documented() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", readme, re.MULTILINE))


def read_by_code() -> set[str]:
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            # The first argument names the variable; env_optional takes several names.
            names |= set(re.findall(r'env_[a-z_]+\(\s*"([A-Z0-9_]+)"', text))
            names |= set(re.findall(r'environ(?:\.get\(|\[)\s*"([A-Z0-9_]+)"', text))
            names |= set(re.findall(r'\(\s*"([A-Z0-9_]+_TOKEN)",\s*Principal', text))
            for arguments in re.findall(r"env_(?:optional|database_url)\(([^)]*)\)", text):
                names |= set(re.findall(r'"([A-Z0-9_]+)"', arguments))
    return names


def set_by_compose() -> set[str]:
    compose = (ROOT / "docker-compose.yml").read_text()
    names = set(re.findall(r"^\s+([A-Z][A-Z0-9_]+):", compose, re.MULTILINE))
    return names - {"POSTGRES_DB", "POSTGRES_USER"}


def test_every_variable_the_services_read_is_documented() -> None:
    read = read_by_code()
    assert {"DATABASE_URL", "OPERATOR_TOKEN", "WALLET_POOL_TARGET"} <= read
    assert read - documented() == set()


def test_every_variable_compose_sets_is_documented() -> None:
    assert set_by_compose() - documented() == set()


def test_compose_publishes_the_ports_the_services_listen_on() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    for variable, port, host_port in [
        ("ORDER_SERVICE_ADDR", 50051, "ORDER_PORT"),
        ("WALLET_POOL_SERVICE_ADDR", 50052, "POOL_PORT"),
    ]:
        assert f"{variable}: 0.0.0.0:{port}" in compose
        # On the host's loopback only, the host port configurable.
        assert f'"127.0.0.1:${{{host_port}:-{port}}}:{port}"' in compose
        assert f'shared.healthcheck", "127.0.0.1:{port}"' in compose
