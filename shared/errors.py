"""Error kinds a use case can raise; the gRPC layer maps each kind to one status code."""

from collections.abc import Mapping
from dataclasses import dataclass


class ServiceError(Exception):
    """Root of the errors a client can be told about."""


class InvalidArgument(ServiceError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(ServiceError):
    pass


class AlreadyExists(ServiceError):
    pass


@dataclass(frozen=True)
class Violation:
    """One unmet precondition (google.rpc.PreconditionFailure.Violation)."""

    type: str
    subject: str
    description: str


class FailedPrecondition(ServiceError):
    violations: tuple[Violation, ...] = ()

    def __init__(self, message: str, *violations: Violation) -> None:
        """`violations`: what the answer lists as unmet (none: only the message)."""
        super().__init__(message)
        if violations:
            self.violations = violations


class Unauthenticated(ServiceError):
    pass


class PermissionDenied(ServiceError):
    pass


class OutOfRange(ServiceError):
    """A position outside what exists (a cursor behind retention or beyond the end)."""


class ResourceExhausted(ServiceError):
    """A limit of the service is reached (say, open streams); retry later or elsewhere."""


class Unavailable(ServiceError):
    pass


class OutcomeUnknown(Unavailable):
    """The database connection was lost while a write was in flight: it may have committed.
    The answer carries a google.rpc.ErrorInfo (reason OUTCOME_UNKNOWN, `domain`, `metadata`),
    so that a client can tell it from an outage in which nothing was written."""

    reason = "OUTCOME_UNKNOWN"

    def __init__(self, message: str, domain: str, metadata: Mapping[str, str]) -> None:
        super().__init__(f"outcome unknown: {message}")
        self.domain = domain
        self.metadata = dict(metadata)
