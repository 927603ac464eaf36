"""Reading settings from the environment: each bad or missing value names its variable."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

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
    """How tokens are verified: one pinned algorithm, its key, the required issuer and audience."""

    algorithm: str
    key: str
    issuer: str
    audience: str


def jwt_settings(env: Mapping[str, str]) -> JwtSettings:
    algorithm = env.get("JWT_ALGORITHM", "HS256").strip()
    if algorithm not in ALGORITHMS:
        raise ConfigError("JWT_ALGORITHM", f"must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    key = required(env, "JWT_KEY")
    if algorithm == "HS256" and len(key.encode()) < 32:
        raise ConfigError("JWT_KEY", "must be at least 32 bytes for HS256")
    if algorithm != "HS256" and "-----BEGIN PUBLIC KEY-----" not in key:
        raise ConfigError("JWT_KEY", f"must be a PEM public key for {algorithm}")
    return JwtSettings(
        algorithm=algorithm,
        key=key,
        issuer=env.get("JWT_ISSUER", "interview-dev").strip() or "interview-dev",
        audience=env.get("JWT_AUDIENCE", "interview").strip() or "interview",
    )


def environ() -> Mapping[str, str]:
    return os.environ
