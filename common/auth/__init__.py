"""Who is calling and what they may do: the one place for authentication and authorization.

- `keys`: where verification keys come from (a key, a JWK Set file or URL), reloaded on rotation.
- `verify`: `Authenticator`, from the authorization header to a verified `Principal`.
- `access`: `Principal`, `Access` (which kind of caller a service takes), the current caller.
- `signing`: the service tokens a service mints for its own outgoing calls, and dev user tokens.

User tokens and service tokens come from different issuers and are checked against different key
sets: no key that can sign one kind is ever consulted for the other.
"""

from common.auth.access import (
    INTERNAL,
    INTERNAL_ROLE,
    MODERATE_ROLE,
    MODERATORS,
    USERS,
    Access,
    Principal,
    current_service,
    current_user_id,
)
from common.auth.signing import ServiceTokenSigner, mint
from common.auth.verify import Authenticator

__all__ = [
    "INTERNAL",
    "INTERNAL_ROLE",
    "MODERATE_ROLE",
    "MODERATORS",
    "USERS",
    "Access",
    "Authenticator",
    "Principal",
    "ServiceTokenSigner",
    "current_service",
    "current_user_id",
    "mint",
]
