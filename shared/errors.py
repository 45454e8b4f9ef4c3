"""Error kinds a use case can raise; the gRPC layer maps each kind to one status code."""

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


class Unauthenticated(ServiceError):
    pass


class PermissionDenied(ServiceError):
    pass


class Unavailable(ServiceError):
    pass
