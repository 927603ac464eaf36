"""Confirmations, the reputation ledger and scores, and the completion outbox.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per paired session this service has heard of: its participants (immutable in
    # the session service), the row every confirmation of the session locks, and the award mark.
    op.execute(
        """
        CREATE TABLE reputation.paired_sessions (
            session_id uuid PRIMARY KEY,
            user_id uuid NOT NULL,
            partner_user_id uuid NOT NULL,
            last_known_status text NOT NULL CHECK (last_known_status IN ('active', 'paused', 'completed')),
            award_time timestamptz,
            create_time timestamptz NOT NULL DEFAULT now(),
            CHECK (user_id <> partner_user_id)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE reputation.confirmations (
            session_id uuid NOT NULL REFERENCES reputation.paired_sessions (session_id),
            user_id uuid NOT NULL,
            create_time timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (session_id, user_id)
        )
        """
    )
    # Every ConfirmCompletion that carried a request_id, first or repeat: a retry with the same
    # request_id answers for this session whatever session_id it names.
    op.execute(
        """
        CREATE TABLE reputation.confirmation_requests (
            user_id uuid NOT NULL,
            request_id uuid NOT NULL,
            session_id uuid NOT NULL REFERENCES reputation.paired_sessions (session_id),
            create_time timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (user_id, request_id)
        )
        """
    )
    # The ledger: an award can only happen once per session and user.
    op.execute(
        """
        CREATE TABLE reputation.events (
            event_id uuid PRIMARY KEY,
            seq bigint GENERATED ALWAYS AS IDENTITY,
            user_id uuid NOT NULL,
            session_id uuid NOT NULL REFERENCES reputation.paired_sessions (session_id),
            delta integer NOT NULL,
            reason text NOT NULL,
            create_time timestamptz NOT NULL DEFAULT now(),
            UNIQUE (session_id, user_id)
        )
        """
    )
    op.execute("CREATE INDEX events_by_user ON reputation.events (user_id, seq DESC)")
    op.execute(
        """
        CREATE TABLE reputation.scores (
            user_id uuid PRIMARY KEY,
            score bigint NOT NULL,
            confirmed_sessions bigint NOT NULL,
            update_time timestamptz NOT NULL
        )
        """
    )
    # "Complete session X" until the session service has done it. A row is claimed by moving
    # next_attempt_time past now (a lease), so a claim never holds a transaction open.
    op.execute(
        """
        CREATE TABLE reputation.outbox (
            session_id uuid PRIMARY KEY REFERENCES reputation.paired_sessions (session_id),
            attempts integer NOT NULL DEFAULT 0,
            next_attempt_time timestamptz NOT NULL,
            last_error text,
            create_time timestamptz NOT NULL DEFAULT now(),
            deliver_time timestamptz
        )
        """
    )
    op.execute("CREATE INDEX outbox_due ON reputation.outbox (next_attempt_time) WHERE deliver_time IS NULL")


def downgrade() -> None:
    for table in ("outbox", "scores", "events", "confirmation_requests", "confirmations", "paired_sessions"):
        op.execute(f"DROP TABLE reputation.{table}")
