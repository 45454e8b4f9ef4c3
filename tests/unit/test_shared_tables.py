"""What the services' mapping code is built from: a row into a dataclass by field name, a
domain enum onto its protobuf twin by member name, a batch into unnest's arrays."""

import enum
from dataclasses import dataclass
from decimal import Decimal

import pytest

from exchange.order.v1 import order_service_pb2 as pb
from order_service.domain import OrderStatus
from shared.proto import from_pb, same_fields, to_pb
from shared.rows import from_row, optional
from shared.sql import columns


class Colour(enum.StrEnum):
    RED = "RED"
    BLUE = "BLUE"


@dataclass(frozen=True)
class Paint:
    colour: Colour
    amount: Decimal
    index: int
    note: str | None = None


def test_a_row_fills_each_field_from_its_column_renamed_converted_or_given() -> None:
    row = {"colour": "RED", "amount": Decimal("1.5"), "output_index": 3, "note": "x"}

    paint = from_row(Paint, row, columns={"index": "output_index"}, convert={"colour": Colour})

    assert paint == Paint(Colour.RED, Decimal("1.5"), 3, "x")
    assert from_row(Paint, row | {"index": 9}, given={"colour": Colour.BLUE}).index == 9


def test_a_prefixed_row_reads_the_prefixed_columns_and_a_missing_column_is_an_error() -> None:
    row = {"paint_colour": "BLUE", "paint_amount": 2, "paint_index": 0, "paint_note": None}

    assert from_row(Paint, row, prefix="paint_", convert={"colour": Colour}).colour is Colour.BLUE
    with pytest.raises(KeyError, match="note"):
        from_row(Paint, {"colour": "RED", "amount": 1, "index": 0})


def test_an_optional_conversion_keeps_null_as_none() -> None:
    assert optional(Colour)(None) is None
    assert optional(Colour)("RED") is Colour.RED


def test_an_enum_table_maps_every_member_to_the_proto_value_of_its_name_and_back() -> None:
    table = to_pb(OrderStatus, pb.OrderStatus, "ORDER_STATUS_")

    assert table[OrderStatus.CANCELLED] == pb.ORDER_STATUS_CANCELLED
    assert set(table) == set(OrderStatus)
    assert from_pb(table)[pb.ORDER_STATUS_PENDING] is OrderStatus.PENDING


def test_an_enum_table_refuses_a_member_the_proto_lacks() -> None:
    with pytest.raises(ValueError, match="ORDER_STATUS_RED"):
        to_pb(Colour, pb.OrderStatus, "ORDER_STATUS_")


def test_same_fields_are_taken_by_name() -> None:
    paint = Paint(Colour.RED, Decimal(1), 2)
    assert same_fields(paint, "index", "note") == {"index": 2, "note": None}


def test_a_batch_becomes_one_array_per_field_with_enums_as_their_values() -> None:
    batch = [Paint(Colour.RED, Decimal(1), 0), Paint(Colour.BLUE, Decimal(2), 1)]

    assert columns(batch, "colour", "index") == [["RED", "BLUE"], [0, 1]]
    assert all(type(value) is str for value in columns(batch, "colour")[0])
    assert columns([], "colour") == [[]]
