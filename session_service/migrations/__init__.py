"""Alembic migrations of the session service's schema (tables, indexes, data moves)."""

SCHEMA = "sessions"
