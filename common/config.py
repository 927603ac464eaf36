"""Reading settings from the environment: each bad or missing value names its variable."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common.auth.keys import KeySetError, read_jwks
from common.auth.signing import load_private_key

ALGORITHMS = ("HS256", "RS256", "EdDSA")
_LISTEN = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


class ConfigError(Exception):
    """A setting is missing or invalid; str() is the one line start-up prints."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"configuration error: {variable} {problem}")
        self.variable = variable


def required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(name, "is required but not set")
    return value


def listen_address(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    match = _LISTEN.match(value)
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise ConfigError(name, f"must be host:port, got {value!r}")
    return value


def database_url(env: Mapping[str, str], name: str) -> str:
    """A postgresql:// URL, returned in SQLAlchemy's asyncpg form."""
    value = required(env, name)
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("postgresql", "postgres", "postgresql+asyncpg") or not rest:
        raise ConfigError(name, "must be a postgresql://user:password@host:port/database URL")
    return f"postgresql+asyncpg://{rest}"


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default)).strip()
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(name, f"must be a positive whole number, got {raw!r}")
    return int(raw)


def non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number, 0 included (0 turns a limit off)."""
    raw = env.get(name, str(default)).strip()
    if not raw.isdigit():
        raise ConfigError(name, f"must be a whole number (0 = off), got {raw!r}")
    return int(raw)


def positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(name, f"must be a positive number of seconds, got {raw!r}")
    return value


def target_address(env: Mapping[str, str], name: str, default: str) -> str:
    """A host:port to dial (same shape as a listen address)."""
    return listen_address(env, name, default)


@dataclass(frozen=True)
class JwtSettings:
    """How user tokens are verified: one pinned algorithm, the required issuer and audience, and the
    identity provider's keys: `key` (one secret or PEM public key), or a JWK Set file or URL."""

    algorithm: str
    key: str
    issuer: str
    audience: str
    jwks_file: str = ""
    jwks_url: str = ""
    max_lifetime_seconds: int = 86400
    # How long a fetched JWK Set is used, and the least time between fetches for an unknown kid.
    jwks_refresh_seconds: float = 60.0


def _readable(env: Mapping[str, str], name: str) -> str:
    """A file path that exists and can be read (empty when unset)."""
    path = env.get(name, "").strip()
    if path and not os.access(path, os.R_OK):
        raise ConfigError(name, f"names a file that cannot be read: {path!r}")
    return path


def jwks_file(env: Mapping[str, str], name: str, public_only: bool) -> str:
    """The path of a JWK Set file that parses, with a kid on every key (empty when unset)."""
    path = _readable(env, name)
    if path:
        try:
            read_jwks(Path(path), public_only)
        except KeySetError as error:
            raise ConfigError(name, str(error)) from None
    return path


def jwt_settings(env: Mapping[str, str]) -> JwtSettings:
    algorithm = env.get("JWT_ALGORITHM", "HS256").strip()
    if algorithm not in ALGORITHMS:
        raise ConfigError("JWT_ALGORITHM", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    key = env.get("JWT_KEY", "").strip()
    file = jwks_file(env, "JWT_JWKS_FILE", public_only=algorithm != "HS256")
    url = env.get("JWT_JWKS_URL", "").strip()
    if sum(map(bool, (key, file, url))) != 1:
        raise ConfigError("JWT_KEY", "or JWT_JWKS_FILE or JWT_JWKS_URL: exactly one must be set")
    if url and not url.startswith(("https://", "http://")):
        raise ConfigError("JWT_JWKS_URL", f"must be an http(s) URL, got {url!r}")
    if key and algorithm == "HS256" and len(key.encode()) < 32:
        raise ConfigError("JWT_KEY", "must be at least 32 bytes for HS256")
    if key and algorithm != "HS256" and "-----BEGIN PUBLIC KEY-----" not in key:
        raise ConfigError("JWT_KEY", f"must be a PEM public key for {algorithm}")
    if url and algorithm == "HS256":
        raise ConfigError("JWT_JWKS_URL", "serves public keys: set JWT_ALGORITHM to RS256 or EdDSA")
    audience = env.get("JWT_AUDIENCE", "interview").strip() or "interview"
    if audience == "interview.internal":
        raise ConfigError("JWT_AUDIENCE", "must differ from the service-token audience interview.internal")
    return JwtSettings(
        algorithm=algorithm,
        key=key,
        issuer=env.get("JWT_ISSUER", "interview-dev").strip() or "interview-dev",
        audience=audience,
        jwks_file=file,
        jwks_url=url,
        max_lifetime_seconds=positive_int(env, "JWT_MAX_LIFETIME_SECONDS", 86400),
    )


def service_token_keys(env: Mapping[str, str], required_by: str | None) -> str:
    """SERVICE_TOKEN_JWKS_FILE: the public keys of the services allowed to call internal RPCs.
    Required when this service serves an internal API (`required_by` names it)."""
    path = jwks_file(env, "SERVICE_TOKEN_JWKS_FILE", public_only=True)
    if not path and required_by:
        raise ConfigError("SERVICE_TOKEN_JWKS_FILE", f"is required: it says who may call {required_by}")
    return path


def page_token_secret(env: Mapping[str, str]) -> bytes:
    """PAGE_TOKEN_SECRET: signs page tokens; the same on every replica, never a token key."""
    secret = required(env, "PAGE_TOKEN_SECRET")
    if len(secret.encode()) < 32:
        raise ConfigError("PAGE_TOKEN_SECRET", "must be at least 32 bytes")
    return secret.encode()


@dataclass(frozen=True)
class ServiceSigning:
    """The key this service signs its own service tokens with (PEM private key file and its kid)."""

    key_file: str
    key_id: str


def service_signing(env: Mapping[str, str]) -> ServiceSigning:
    path = _readable(env, "SERVICE_SIGNING_KEY_FILE") or required(env, "SERVICE_SIGNING_KEY_FILE")
    try:
        load_private_key(Path(path).read_bytes())
    except ValueError as error:
        raise ConfigError("SERVICE_SIGNING_KEY_FILE", str(error)) from None
    return ServiceSigning(key_file=path, key_id=required(env, "SERVICE_SIGNING_KEY_ID"))


@dataclass(frozen=True)
class TlsSettings:
    """Transport security. Serving: TLS with cert_file and key_file, mutual TLS when client_ca_file
    is set too. Dialling: ca_file as roots, presenting cert_file/key_file when the server asks."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""
    ca_file: str = ""

    @property
    def serving(self) -> bool:
        return bool(self.cert_file)


PLAINTEXT = TlsSettings()


def _pem_file(env: Mapping[str, str], name: str, marker: str) -> str:
    path = _readable(env, name)
    if path and marker not in Path(path).read_text(errors="replace"):
        raise ConfigError(name, f"must be a PEM file holding {marker.strip('-').lower()}")
    return path


def tls_settings(env: Mapping[str, str]) -> TlsSettings:
    settings = TlsSettings(
        cert_file=_pem_file(env, "TLS_CERT_FILE", "-----BEGIN CERTIFICATE-----"),
        key_file=_pem_file(env, "TLS_KEY_FILE", "PRIVATE KEY-----"),
        client_ca_file=_pem_file(env, "TLS_CLIENT_CA_FILE", "-----BEGIN CERTIFICATE-----"),
        ca_file=_pem_file(env, "TLS_CA_FILE", "-----BEGIN CERTIFICATE-----"),
    )
    if bool(settings.cert_file) != bool(settings.key_file):
        raise ConfigError("TLS_CERT_FILE", "and TLS_KEY_FILE must be set together")
    if settings.client_ca_file and not settings.cert_file:
        raise ConfigError("TLS_CLIENT_CA_FILE", "needs TLS_CERT_FILE and TLS_KEY_FILE (mutual TLS is TLS)")
    return settings


@dataclass(frozen=True)
class Limits:
    """What one process takes on: calls in progress, and how long one statement may run."""

    max_concurrent_rpcs: int = 512
    statement_timeout: float = 5.0
    # Off behind PgBouncer in transaction mode, where a prepared statement cannot outlive its
    # transaction's server connection.
    statement_cache: bool = True


DEFAULT_LIMITS = Limits()


def limits(env: Mapping[str, str]) -> Limits:
    cache = env.get("DB_STATEMENT_CACHE", "on").strip().lower()
    if cache not in ("on", "off"):
        raise ConfigError("DB_STATEMENT_CACHE", f"must be on or off, got {cache!r}")
    return Limits(
        max_concurrent_rpcs=positive_int(env, "MAX_CONCURRENT_RPCS", 512),
        statement_timeout=positive_float(env, "DB_STATEMENT_TIMEOUT_SECONDS", 5.0),
        statement_cache=cache == "on",
    )


def workers(env: Mapping[str, str], name: str, listen: str) -> int:
    """How many processes serve one port (SESSION_WORKERS / REPUTATION_WORKERS)."""
    count = positive_int(env, name, 1)
    if count > 1 and listen.endswith(":0"):
        raise ConfigError(name, "needs a fixed port to listen on: port 0 cannot be shared")
    return count
