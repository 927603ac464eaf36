"""Reputation service settings, read from the environment and validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.config import (
    DEFAULT_LIMITS,
    PLAINTEXT,
    ConfigError,
    JwtSettings,
    Limits,
    ServiceSigning,
    TlsSettings,
    database_url,
    jwt_settings,
    limits,
    listen_address,
    non_negative_int,
    page_token_secret,
    positive_float,
    positive_int,
    service_signing,
    service_token_keys,
    target_address,
    tls_settings,
    workers,
)


@dataclass(frozen=True)
class Config:
    listen: str
    database_url: str
    jwt: JwtSettings
    session_service_target: str
    # Signs the short-lived service tokens sent to SessionInternalService.
    signing: ServiceSigning
    page_token_secret: bytes
    # Services allowed to call this service's internal RPCs ("" = none are taken).
    service_jwks_file: str = ""
    tls: TlsSettings = PLAINTEXT
    pool_size: int = 10
    session_service_timeout: float = 2.0
    relay_interval: float = 1.0
    outbox_lease: float = 10.0
    relay_max_backoff: float = 30.0
    # Where /metrics is served. This default (any free port) suits tests; load() uses the documented one.
    metrics_listen: str = "127.0.0.1:0"
    workers: int = 1
    limits: Limits = DEFAULT_LIMITS
    # Caps against farming (0 = off) and the confirmation window.
    pair_daily_award_limit: int = 3
    user_daily_award_limit: int = 20
    confirmation_window: float = 7 * 24 * 3600.0


def outbox_lease(env: Mapping[str, str], session_service_timeout: float) -> float:
    """OUTBOX_LEASE_SECONDS, which must outlast a delivery attempt (SESSION_SERVICE_TIMEOUT_SECONDS):
    a row whose lease ran out mid-attempt is claimed, and attempted, by another replica."""
    lease = positive_float(env, "OUTBOX_LEASE_SECONDS", 10.0)
    if lease <= session_service_timeout:
        raise ConfigError(
            "OUTBOX_LEASE_SECONDS",
            f"must be longer than SESSION_SERVICE_TIMEOUT_SECONDS ({session_service_timeout:g} s), "
            f"the delivery attempt a lease covers, got {lease:g}",
        )
    return lease


def load(env: Mapping[str, str]) -> Config:
    listen = listen_address(env, "REPUTATION_LISTEN", "127.0.0.1:50052")
    session_service_timeout = positive_float(env, "SESSION_SERVICE_TIMEOUT_SECONDS", 2.0)
    return Config(
        listen=listen,
        database_url=database_url(env, "REPUTATION_DATABASE_URL"),
        jwt=jwt_settings(env),
        session_service_target=target_address(env, "SESSION_SERVICE_TARGET", "127.0.0.1:50051"),
        signing=service_signing(env),
        page_token_secret=page_token_secret(env),
        service_jwks_file=service_token_keys(env, required_by=None),
        tls=tls_settings(env),
        pool_size=positive_int(env, "REPUTATION_DB_POOL_SIZE", 10),
        session_service_timeout=session_service_timeout,
        relay_interval=positive_float(env, "RELAY_INTERVAL_SECONDS", 1.0),
        outbox_lease=outbox_lease(env, session_service_timeout),
        relay_max_backoff=positive_float(env, "RELAY_MAX_BACKOFF_SECONDS", 30.0),
        metrics_listen=listen_address(env, "REPUTATION_METRICS_LISTEN", "127.0.0.1:9152"),
        limits=limits(env),
        workers=workers(env, "REPUTATION_WORKERS", listen),
        pair_daily_award_limit=non_negative_int(env, "PAIR_DAILY_AWARD_LIMIT", 3),
        user_daily_award_limit=non_negative_int(env, "USER_DAILY_AWARD_LIMIT", 20),
        confirmation_window=positive_float(env, "CONFIRMATION_WINDOW_SECONDS", 7 * 24 * 3600.0),
    )
