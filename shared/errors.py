"""Error kinds a use case can raise; the gRPC layer maps each kind to one status code."""


class ServiceError(Exception):
    """Root of the errors a client can be told about."""


class InvalidArgument(ServiceError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(ServiceError):
    pass


class AlreadyExists(ServiceError):
    pass


class FailedPrecondition(ServiceError):
    pass


class Unauthenticated(ServiceError):
    pass


class PermissionDenied(ServiceError):
    pass


class Unavailable(ServiceError):
    pass
