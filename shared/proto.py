"""Domain enums and their protobuf twins: one table per pair, built from the names.

A proto enum value is its domain member's name behind the enum's prefix (`ORDER_STATUS_`
+ `PENDING`), so the table is derived rather than written out; a member the proto lacks
fails at import, so the two cannot drift apart unnoticed."""

import enum
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

E = TypeVar("E", bound=enum.Enum)
V = TypeVar("V", bound=int, covariant=True)


class ProtoEnum(Protocol[V]):
    """A generated enum type wrapper (`pb.OrderStatus`)."""

    def Value(self, name: str) -> V: ...


def to_pb(members: Iterable[E], proto: "ProtoEnum[V]", prefix: str) -> dict[E, V]:
    """Each member to the proto value named `prefix` + its name (ValueError if missing)."""
    return {member: proto.Value(prefix + member.name) for member in members}


def from_pb(table: dict[E, V]) -> dict[int, E]:
    """The reverse of a `to_pb` table, keyed by the wire number."""
    return {number: member for member, number in table.items()}


def same_fields(source: object, *names: str) -> dict[str, Any]:
    """The named attributes of `source`, for a message (or value) whose fields of those names
    mean the same: passed through as they are, so only the others are spelled out."""
    return {name: getattr(source, name) for name in names}
