"""Session service settings, read from the environment and validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.config import (
    DEFAULT_LIMITS,
    PLAINTEXT,
    JwtSettings,
    Limits,
    TlsSettings,
    database_url,
    jwt_settings,
    limits,
    listen_address,
    page_token_secret,
    positive_int,
    service_token_keys,
    tls_settings,
    workers,
)


@dataclass(frozen=True)
class Config:
    listen: str
    database_url: str
    jwt: JwtSettings
    # Public keys of the services allowed to call SessionInternalService (SERVICE_TOKEN_JWKS_FILE).
    service_jwks_file: str
    page_token_secret: bytes
    pool_size: int
    tls: TlsSettings = PLAINTEXT
    # Where /metrics is served. This default (any free port) suits tests; load() uses the documented one.
    metrics_listen: str = "127.0.0.1:0"
    workers: int = 1
    limits: Limits = DEFAULT_LIMITS


def load(env: Mapping[str, str]) -> Config:
    listen = listen_address(env, "SESSION_LISTEN", "127.0.0.1:50051")
    return Config(
        listen=listen,
        database_url=database_url(env, "SESSION_DATABASE_URL"),
        jwt=jwt_settings(env),
        service_jwks_file=service_token_keys(env, required_by="SessionInternalService"),
        page_token_secret=page_token_secret(env),
        pool_size=positive_int(env, "SESSION_DB_POOL_SIZE", 10),
        tls=tls_settings(env),
        metrics_listen=listen_address(env, "SESSION_METRICS_LISTEN", "127.0.0.1:9151"),
        limits=limits(env),
        workers=workers(env, "SESSION_WORKERS", listen),
    )
