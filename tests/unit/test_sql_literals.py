"""The SQL's spelling of the services' states is the Python enums' (a status in a partial
index or a WHERE needs a literal), and migrations after the cut hold no database code (that
lives in each service's sql/ folder, README "Changing the schema")."""

import re
from pathlib import Path

from order_service.domain import (
    LIVE_STATUSES,
    DepositDisposition,
    DepositStatus,
    OrderStatus,
    WalletRelease,
)
from order_service.events import EventType
from order_service.payment import PaymentStatus
from wallet_pool_service import deposits
from wallet_pool_service.domain import WalletState

ROOT = Path(__file__).resolve().parents[2]
# The last migrations that defined functions, triggers or views; later ones may not.
LAST_WITH_CODE = {"order_service": "007", "wallet_pool_service": "009"}
_CODE = re.compile(r"\bCREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|TRIGGER|VIEW|PROCEDURE)\b", re.I)
_LITERAL = re.compile(r"'([A-Z][A-Z_]+)'")
_STATUS_LIST = re.compile(r"status\s+IN\s*\(([^)]*)\)")
# PL/pgSQL's TG_OP values, not states.
_KEYWORDS = {"INSERT", "UPDATE", "DELETE", "TRUNCATE"}


def _sql(service: str) -> str:
    folder = ROOT / service
    files = [folder / "queries.sql", *sorted((folder / "sql").glob("*.sql"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def test_migrations_after_the_cut_define_no_function_trigger_or_view() -> None:
    found = [
        path.relative_to(ROOT).as_posix()
        for service, last in LAST_WITH_CODE.items()
        for path in sorted((ROOT / service / "migrations").glob("*.sql"))
        if path.name[:3] > last and _CODE.search(path.read_text(encoding="utf-8"))
    ]
    assert found == [], "put functions, triggers and views in the service's sql/ folder"


def test_every_upper_case_literal_in_the_order_services_sql_is_one_of_its_enums() -> None:
    known = {*OrderStatus, *EventType, *(member.name for member in WalletRelease)}
    known |= {*DepositStatus, *DepositDisposition, *PaymentStatus}
    assert set(_LITERAL.findall(_sql("order_service"))) - known - _KEYWORDS == set()


def test_every_upper_case_literal_in_the_pools_sql_is_one_of_its_enums() -> None:
    known = {
        *WalletState,
        *deposits.DepositKind,
        *deposits.Disposition,
        *deposits.DepositStatus,
        *deposits.RetractionReason,
        *deposits.Attribution,
    }
    assert set(_LITERAL.findall(_sql("wallet_pool_service"))) - known - _KEYWORDS == set()


def test_every_status_list_in_the_orders_sql_is_the_live_or_the_final_statuses() -> None:
    lists = [
        frozenset(_LITERAL.findall(found)) for found in _STATUS_LIST.findall(_sql("order_service"))
    ]
    assert lists
    final = frozenset(OrderStatus) - LIVE_STATUSES
    assert [found for found in lists if found not in (LIVE_STATUSES, final)] == []
