"""A request_id is scoped to the caller and the RPC: CreateSession and RetakeSession each get
their own unique index instead of sharing one.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Originals come from CreateSession, retakes from RetakeSession.
    op.execute(
        "CREATE UNIQUE INDEX sessions_create_request ON sessions.sessions (user_id, request_id) "
        "WHERE request_id IS NOT NULL AND original_session_id IS NULL"
    )
    op.execute(
        "CREATE UNIQUE INDEX sessions_retake_request ON sessions.sessions (user_id, request_id) "
        "WHERE request_id IS NOT NULL AND original_session_id IS NOT NULL"
    )
    op.execute("DROP INDEX sessions.sessions_request")


def downgrade() -> None:
    op.execute(
        "CREATE UNIQUE INDEX sessions_request ON sessions.sessions (user_id, request_id) "
        "WHERE request_id IS NOT NULL"
    )
    op.execute("DROP INDEX sessions.sessions_create_request")
    op.execute("DROP INDEX sessions.sessions_retake_request")
