"""Where verification keys come from, and how a rotation reaches a running process.

A user-token key is one fixed key (`JWT_KEY`), a JWK Set file re-read when it changes, or a JWK Set
URL fetched with PyJWT's `PyJWKClient` (cached, re-fetched on an unknown `kid` at most once per
cooldown). Service-token keys are always a JWK Set file of public keys, one per calling service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKClientError, PyJWKSet

from common.errors import Unauthenticated

log = logging.getLogger(__name__)
# How often a JWK Set file is looked at (one stat) for a rotation.
FILE_CHECK_SECONDS = 1.0
# Key types that can only verify: a symmetric ("oct") key could also sign, so it is never trusted
# in a set of public keys.
PUBLIC_KEY_TYPES = ("OKP", "RSA", "EC")


class KeySetError(Exception):
    """A key or key set that cannot be used; str() says why (start-up names the variable)."""


def read_jwks(path: Path, public_only: bool) -> dict[str, PyJWK]:
    """The keys of a JWK Set file by `kid`; every key needs a `kid`, and with `public_only` no
    key may be able to sign."""
    try:
        data = json.loads(path.read_text())
        keys = PyJWKSet.from_dict(data).keys
    except (OSError, ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as error:
        raise KeySetError(f"is not a readable JWK Set ({error})") from None
    found: dict[str, PyJWK] = {}
    for key in keys:
        if not key.key_id:
            raise KeySetError("has a key without a kid")
        if public_only and (key.key_type not in PUBLIC_KEY_TYPES or hasattr(key.key, "sign")):
            raise KeySetError(f"key {key.key_id!r} is not a public key")
        found[key.key_id] = key
    return found


class StaticKey:
    """One key for every token, whatever its `kid` (`JWT_KEY`)."""

    def __init__(self, algorithm: str, key: str) -> None:
        # Parsed once here instead of on every call.
        self.algorithm = algorithm
        self._key = jwt.get_algorithm_by_name(algorithm).prepare_key(key)

    def changed(self) -> bool:
        return False

    async def key(self, kid: Any) -> Any:
        return self._key


class JwksFile:
    """A JWK Set file, re-read when it changes: at most one stat per FILE_CHECK_SECONDS, and at once
    for an unknown `kid`. A file that does not parse keeps the keys it replaced (a rotation half
    written must not lock everyone out)."""

    def __init__(self, path: Path, public_only: bool, check_seconds: float = FILE_CHECK_SECONDS) -> None:
        self._path = path
        self._public_only = public_only
        self._check_seconds = check_seconds
        self._stamp = self._stat()
        self._keys = read_jwks(path, public_only)
        self._next_check = time.monotonic() + check_seconds

    def _stat(self) -> tuple[int, int, int]:
        try:
            stat = os.stat(self._path)
        except OSError:
            return (0, 0, 0)
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def changed(self) -> bool:
        """Re-reads the file if it changed since last looked at (at most once per check interval);
        True when the keys were replaced."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self._check_seconds
        return self._reload()

    def _reload(self) -> bool:
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            keys = read_jwks(self._path, self._public_only)
        except KeySetError as error:
            log.warning({"event": "jwks_reload_failed", "path": str(self._path), "problem": str(error)})
            return False
        self._keys = keys
        log.info({"event": "jwks_reloaded", "path": str(self._path), "kids": sorted(keys)})
        return True

    def get(self, kid: Any) -> PyJWK:
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id (kid)")
        found = self._keys.get(kid)
        # An unknown kid looks at the file at once (one stat), without moving the periodic check.
        if found is None and self._reload():
            found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated("token signed with an unknown key")
        return found

    async def key(self, kid: Any) -> PyJWK:
        return self.get(kid)


class JwksUrl:
    """The identity provider's JWK Set URL through PyJWKClient: the set is cached for
    `refresh_seconds` and fetched again on an unknown `kid` at most once per `refresh_seconds`.
    Fetches block, so they run on a thread."""

    def __init__(self, url: str, refresh_seconds: float) -> None:
        self._client = PyJWKClient(
            url, cache_jwk_set=True, lifespan=refresh_seconds, cooldown_duration=refresh_seconds, timeout=5
        )

    def changed(self) -> bool:
        # The set is fetched again once `refresh_seconds` old; the Authenticator re-checks every
        # verified token at least that often, which is when a removed key stops being accepted.
        return False

    async def key(self, kid: Any) -> PyJWK:
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token has no key id (kid)")
        try:
            return await asyncio.to_thread(self._client.get_signing_key, kid)
        except PyJWKClientError as error:
            log.warning({"event": "jwks_lookup_failed", "kid": kid[:64], "problem": str(error)[:200]})
            raise Unauthenticated("token signed with an unknown key") from None
