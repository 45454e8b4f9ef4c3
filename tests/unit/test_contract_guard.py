"""The contract guard of `make lint`: the real buf binary compares a copy of protos/ with the
released contract (protos/released.binpb, cut by `make contract-release`) and refuses a change
that breaks its clients, while the contract as it is passes."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.databases import ROOT

BUF = Path(sys.executable).parent / "buf"
RELEASED = ROOT / "protos" / "released.binpb"
ORDER_PROTO = Path("protos/exchange/order/v1/order_service.proto")
POOL_PROTO = Path("protos/exchange/wallet_pool/v1/wallet_pool_service.proto")


@pytest.fixture
def contract(tmp_path: Path) -> Path:
    """A copy of the workspace's contract, free to be changed."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos", ignore=shutil.ignore_patterns("*.binpb"))
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def breaking(workspace: Path) -> tuple[int, list[dict[str, Any]]]:
    """buf's exit code and its findings against the released contract."""
    result = subprocess.run(
        [BUF, "breaking", "--against", RELEASED, "--error-format", "json"],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not result.stderr.strip(), result.stderr
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()]


def edit_message(proto: Path, message: str, old: str, new: str) -> None:
    """Replaces `old` by `new` inside one message's body only."""
    text = proto.read_text()
    block = re.search(rf"^message {message} \{{\n.*?^\}}", text, re.MULTILINE | re.DOTALL)
    assert block and old in block.group(), f"{old!r} not in message {message}"
    changed = block.group().replace(old, new)
    proto.write_text(text[: block.start()] + changed + text[block.end() :])


def test_the_contract_as_it_is_keeps_the_released_one(contract: Path) -> None:
    assert breaking(contract) == (0, [])


def test_renumbering_a_field_breaks_the_contract(contract: Path) -> None:
    edit_message(contract / ORDER_PROTO, "CreateOrderRequest", "amount = 2;", "amount = 15;")

    code, findings = breaking(contract)

    assert code != 0
    assert {(f["path"], f["type"]) for f in findings} >= {(str(ORDER_PROTO), "FIELD_NO_DELETE")}
    assert any(
        'Previously present field "2" with name "amount" on message "CreateOrderRequest"'
        in f["message"]
        for f in findings
    ), findings


def test_removing_an_rpc_breaks_the_contract(contract: Path) -> None:
    proto = contract / POOL_PROTO
    text = proto.read_text()
    rpc = "  rpc ReleaseWallet(ReleaseWalletRequest) returns (ReleaseWalletResponse);\n"
    assert rpc in text
    proto.write_text(text.replace(rpc, ""))

    code, findings = breaking(contract)

    assert code != 0
    assert [(f["path"], f["type"], f["message"]) for f in findings] == [
        (
            str(POOL_PROTO),
            "RPC_NO_DELETE",
            'Previously present RPC "ReleaseWallet" on service "WalletPoolService" was deleted.',
        )
    ]


def test_adding_a_field_keeps_the_contract(contract: Path) -> None:
    edit_message(
        contract / ORDER_PROTO,
        "CreateOrderRequest",
        "string request_id = 3;",
        "string request_id = 3;\n  string note = 15;",
    )

    assert breaking(contract) == (0, [])
