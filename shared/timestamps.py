"""protobuf Timestamp <-> aware datetime."""

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from shared.errors import InvalidArgument


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def from_timestamp(stamp: Timestamp) -> datetime:
    return stamp.ToDatetime(tzinfo=UTC)


def parse_timestamp(stamp: Timestamp, field: str) -> datetime:
    """A request's time, or InvalidArgument naming `field` (nanos or seconds out of range)."""
    try:
        return from_timestamp(stamp)
    except (ValueError, OverflowError):
        raise InvalidArgument(field, "is not a valid time") from None
