"""Alembic environment for the `sessions` schema."""

from common.db import run_alembic_env

run_alembic_env(schema="sessions")
