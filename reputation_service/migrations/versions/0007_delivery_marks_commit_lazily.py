"""Delivery marks commit without waiting for the WAL flush. This revision created
`reputation.mark_delivered`; it now lives in `reputation_service/sql/mark_delivered.sql`, applied
after the migrations (`common.migrations`), so this revision changes no table.

Revision ID: 0007
Revises: 0006
"""

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
