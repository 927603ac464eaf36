"""Alembic environment for the `sessions` schema."""

from common.migrations import run_alembic_env
from session_service.migrations import SCHEMA

run_alembic_env(SCHEMA)
