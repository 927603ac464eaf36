"""Sessions with retake chains, and their messages.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE sessions.sessions (
            session_id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            partner_user_id uuid,
            job_posting_id uuid,
            status text NOT NULL CHECK (status IN ('active', 'paused', 'completed')),
            current_question_number integer NOT NULL DEFAULT 0 CHECK (current_question_number >= 0),
            retake_number integer NOT NULL DEFAULT 1 CHECK (retake_number >= 1),
            original_session_id uuid REFERENCES sessions.sessions (session_id),
            request_id uuid,
            create_time timestamptz NOT NULL DEFAULT now(),
            update_time timestamptz NOT NULL DEFAULT now(),
            complete_time timestamptz,
            CHECK (partner_user_id <> user_id),
            CHECK ((status = 'completed') = (complete_time IS NOT NULL)),
            CHECK ((original_session_id IS NULL) = (retake_number = 1))
        )
        """
    )
    # One number per chain: concurrent retakes cannot share one.
    op.execute(
        "CREATE UNIQUE INDEX sessions_chain_number ON sessions.sessions "
        "(COALESCE(original_session_id, session_id), retake_number)"
    )
    op.execute(
        "CREATE UNIQUE INDEX sessions_request ON sessions.sessions (user_id, request_id) "
        "WHERE request_id IS NOT NULL"
    )
    # Keyset pages for ListSessions: one index per side of "owner or partner", with and
    # without the status filter, so a page costs O(page size) however many rows there are.
    op.execute(
        "CREATE INDEX sessions_by_owner ON sessions.sessions (user_id, create_time DESC, session_id DESC)"
    )
    op.execute(
        "CREATE INDEX sessions_by_owner_status ON sessions.sessions "
        "(user_id, status, create_time DESC, session_id DESC)"
    )
    op.execute(
        "CREATE INDEX sessions_by_partner ON sessions.sessions "
        "(partner_user_id, create_time DESC, session_id DESC) WHERE partner_user_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX sessions_by_partner_status ON sessions.sessions "
        "(partner_user_id, status, create_time DESC, session_id DESC) "
        "WHERE partner_user_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX sessions_by_job_posting ON sessions.sessions (job_posting_id) "
        "WHERE job_posting_id IS NOT NULL"
    )
    op.execute(
        """
        CREATE TABLE sessions.messages (
            message_id uuid PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            session_id uuid NOT NULL REFERENCES sessions.sessions (session_id),
            author_user_id uuid NOT NULL,
            role text NOT NULL CHECK (role IN ('question', 'answer')),
            content text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 16384),
            question_number integer NOT NULL CHECK (question_number >= 1),
            request_id uuid,
            create_time timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX messages_by_session ON sessions.messages (session_id, seq)")
    op.execute(
        "CREATE UNIQUE INDEX messages_request ON sessions.messages (author_user_id, request_id) "
        "WHERE request_id IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP TABLE sessions.messages")
    op.execute("DROP TABLE sessions.sessions")
