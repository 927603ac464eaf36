"""Typed errors raised by domain and api code; `common.status` maps each to a gRPC status once."""

from __future__ import annotations


class ServiceError(Exception):
    """An error the caller should see: a gRPC code name, an ErrorInfo reason and the ids involved."""

    code = "INTERNAL"
    reason = "INTERNAL"

    def __init__(self, message: str, **metadata: str) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = {key: str(value) for key, value in metadata.items()}


class Unauthenticated(ServiceError):
    code = reason = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    code = reason = "PERMISSION_DENIED"


class InvalidArgument(ServiceError):
    """A bad request field; `fields` maps each offending field to what is wrong with it."""

    code = reason = "INVALID_ARGUMENT"

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in fields.items()))
        self.fields = fields


class NotFound(ServiceError):
    code = "NOT_FOUND"


class SessionNotFound(NotFound):
    """No such session, or the caller does not participate in it: existence is never leaked."""

    reason = "SESSION_NOT_FOUND"

    def __init__(self, session_id: str) -> None:
        super().__init__("session not found", session_id=session_id)


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"


class DatabaseUnavailable(Unavailable):
    reason = "DATABASE_UNAVAILABLE"

    def __init__(self) -> None:
        super().__init__("the database is not reachable; retry later")


class Overloaded(ServiceError):
    """The process is at its limit of calls in progress: refused at once, before any work."""

    code = "RESOURCE_EXHAUSTED"
    reason = "OVERLOADED"

    def __init__(self, limit: int) -> None:
        super().__init__(f"the server is at its limit of {limit} calls in progress; retry with backoff")
