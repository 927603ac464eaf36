"""ConfirmCompletion in one round trip. This revision created the view and the functions it runs
on; they now live in `reputation_service/sql/`, one file each, applied after the migrations
(`common.migrations`), so this revision changes no table.

Revision ID: 0004
Revises: 0003
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
