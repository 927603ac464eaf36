"""Dead outbox rows: a completion the session service refused for good waits for an operator.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Set when the session service refused the completion with a code no retry can change
    # (PERMISSION_DENIED after a key mistake, FAILED_PRECONDITION...): the relay stops claiming the
    # row, `outbox_dead_rows` counts it, and `python -m reputation_service replay-outbox` clears it.
    op.execute("ALTER TABLE reputation.outbox ADD COLUMN dead_time timestamptz")
    # The due index covers live rows only, so claims and the backlog never walk dead ones.
    op.execute("DROP INDEX reputation.outbox_due")
    op.execute(
        "CREATE INDEX outbox_due ON reputation.outbox (next_attempt_time) "
        "WHERE deliver_time IS NULL AND dead_time IS NULL"
    )
    op.execute(
        "CREATE INDEX outbox_dead ON reputation.outbox (dead_time) "
        "WHERE deliver_time IS NULL AND dead_time IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX reputation.outbox_dead")
    op.execute("DROP INDEX reputation.outbox_due")
    op.execute("ALTER TABLE reputation.outbox DROP COLUMN dead_time")
    op.execute("CREATE INDEX outbox_due ON reputation.outbox (next_attempt_time) WHERE deliver_time IS NULL")
