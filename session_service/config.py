"""Session service settings, read from the environment and validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.config import JwtSettings, database_url, jwt_settings, listen_address, positive_int


@dataclass(frozen=True)
class Config:
    listen: str
    database_url: str
    jwt: JwtSettings
    pool_size: int
    # Where /metrics is served. This default (any free port) suits tests; load() uses the documented one.
    metrics_listen: str = "127.0.0.1:0"


def load(env: Mapping[str, str]) -> Config:
    return Config(
        listen=listen_address(env, "SESSION_LISTEN", "127.0.0.1:50051"),
        database_url=database_url(env, "SESSION_DATABASE_URL"),
        jwt=jwt_settings(env),
        pool_size=positive_int(env, "SESSION_DB_POOL_SIZE", 10),
        metrics_listen=listen_address(env, "SESSION_METRICS_LISTEN", "127.0.0.1:9151"),
    )
