"""The outbox row keeps the W3C trace context of the confirmation that queued it, so the relay's
delivery, maybe minutes later, links to that trace (`reputation.confirm` writes it; the sweeper's
rows, queued by no call, have none).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE reputation.outbox ADD COLUMN traceparent text")


def downgrade() -> None:
    op.execute("ALTER TABLE reputation.outbox DROP COLUMN traceparent")
