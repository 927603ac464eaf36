"""Reputation service settings, read from the environment and validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.config import (
    ConfigError,
    JwtSettings,
    database_url,
    jwt_settings,
    listen_address,
    positive_float,
    positive_int,
    target_address,
)


@dataclass(frozen=True)
class Config:
    listen: str
    database_url: str
    jwt: JwtSettings
    session_service_target: str
    # Signs the short-lived service tokens sent to SessionInternalService.
    signing_key: str
    pool_size: int = 10
    session_service_timeout: float = 2.0
    relay_interval: float = 1.0
    outbox_lease: float = 10.0
    relay_max_backoff: float = 30.0
    # Where /metrics is served. This default (any free port) suits tests; load() uses the documented one.
    metrics_listen: str = "127.0.0.1:0"


def _signing_key(env: Mapping[str, str], jwt: JwtSettings) -> str:
    key = env.get("SERVICE_SIGNING_KEY", "").strip()
    if not key and jwt.algorithm == "HS256":
        return jwt.key
    if not key:
        raise ConfigError("SERVICE_SIGNING_KEY", f"is required (a PEM private key) for {jwt.algorithm}")
    if jwt.algorithm != "HS256" and "PRIVATE KEY-----" not in key:
        raise ConfigError("SERVICE_SIGNING_KEY", f"must be a PEM private key for {jwt.algorithm}")
    return key


def load(env: Mapping[str, str]) -> Config:
    jwt = jwt_settings(env)
    return Config(
        listen=listen_address(env, "REPUTATION_LISTEN", "127.0.0.1:50052"),
        database_url=database_url(env, "REPUTATION_DATABASE_URL"),
        jwt=jwt,
        session_service_target=target_address(env, "SESSION_SERVICE_TARGET", "127.0.0.1:50051"),
        signing_key=_signing_key(env, jwt),
        pool_size=positive_int(env, "REPUTATION_DB_POOL_SIZE", 10),
        session_service_timeout=positive_float(env, "SESSION_SERVICE_TIMEOUT_SECONDS", 2.0),
        relay_interval=positive_float(env, "RELAY_INTERVAL_SECONDS", 1.0),
        outbox_lease=positive_float(env, "OUTBOX_LEASE_SECONDS", 10.0),
        relay_max_backoff=positive_float(env, "RELAY_MAX_BACKOFF_SECONDS", 30.0),
        metrics_listen=listen_address(env, "REPUTATION_METRICS_LISTEN", "127.0.0.1:9152"),
    )
