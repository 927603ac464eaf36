"""The verified caller of a call, and which kind of caller each service takes."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass

from common.errors import PermissionDenied

INTERNAL_ROLE = "sessions.internal"
MODERATE_ROLE = "reputation.moderate"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (user_id set) or a service (service set, with its roles)."""

    user_id: str | None = None
    service: str | None = None
    roles: frozenset[str] = frozenset()


# The caller of the call being served, set by the interceptor around each servicer call.
_current: ContextVar[Principal] = ContextVar("principal")


def current_user_id() -> str:
    """The calling user's id; the interceptor guarantees a user token on public services."""
    user_id = _current.get().user_id
    assert user_id is not None, "public RPC reached without a user token"
    return user_id


def current_service() -> str:
    """The calling service's name; the interceptor guarantees a service token on internal services."""
    service = _current.get().service
    assert service is not None, "internal RPC reached without a service token"
    return service


@dataclass(frozen=True)
class Access:
    """Who may call a service: end users (role None) or services holding `role`."""

    role: str | None = None

    def check(self, principal: Principal) -> None:
        if self.role is None and principal.user_id is None:
            raise PermissionDenied("this service is for user tokens")
        if self.role is not None and self.role not in principal.roles:
            raise PermissionDenied(f"this service needs a service token with role {self.role}")

    def enter(self, principal: Principal) -> Token[Principal]:
        self.check(principal)
        return _current.set(principal)

    @staticmethod
    def leave(token: Token[Principal]) -> None:
        _current.reset(token)


USERS = Access()
INTERNAL = Access(role=INTERNAL_ROLE)
MODERATORS = Access(role=MODERATE_ROLE)
