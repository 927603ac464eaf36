"""Alembic environment for the `reputation` schema."""

from common.migrations import run_alembic_env
from reputation_service.migrations import SCHEMA

run_alembic_env(SCHEMA)
