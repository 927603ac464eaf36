"""Alembic migrations of the reputation service's schema (tables, indexes, data moves)."""

SCHEMA = "reputation"
