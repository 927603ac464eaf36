"""Alembic environment for the `reputation` schema."""

from common.db import run_alembic_env

run_alembic_env(schema="reputation")
