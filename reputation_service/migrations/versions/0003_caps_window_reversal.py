"""Reputation that means something: daily caps decided from counters, the confirmation window,
moderator reversals, and notes on ledger events.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # award_time is when the session's awards were decided (both confirmed), whoever got a point;
    # who did and whom a cap held back are kept with it. close_time: the window closed with one
    # confirmation. reverse_time: a moderator reversed the awards.
    op.execute(
        """
        ALTER TABLE reputation.paired_sessions
            ADD COLUMN awarded_user_ids uuid[] NOT NULL DEFAULT '{}',
            ADD COLUMN capped_user_ids uuid[] NOT NULL DEFAULT '{}',
            ADD COLUMN first_confirm_time timestamptz,
            ADD COLUMN close_time timestamptz,
            ADD COLUMN reverse_time timestamptz
        """
    )
    # Sessions decided before caps existed awarded both participants.
    op.execute(
        """
        UPDATE reputation.paired_sessions
           SET awarded_user_ids = ARRAY[user_id, partner_user_id]
         WHERE award_time IS NOT NULL
        """
    )
    op.execute(
        """
        UPDATE reputation.paired_sessions p
           SET first_confirm_time = (SELECT min(c.create_time) FROM reputation.confirmations c
                                      WHERE c.session_id = p.session_id)
        """
    )
    # The sweeper's work list: half-confirmed sessions, oldest first.
    op.execute(
        "CREATE INDEX paired_sessions_open ON reputation.paired_sessions (first_confirm_time) "
        "WHERE award_time IS NULL AND close_time IS NULL AND first_confirm_time IS NOT NULL"
    )
    # A ledger entry per session, user and reason: the award (or the cap that withheld it), the
    # window's close, its reversal. `note` carries a moderator's reason.
    op.execute("ALTER TABLE reputation.events ADD COLUMN note text NOT NULL DEFAULT ''")
    op.execute("ALTER TABLE reputation.events DROP CONSTRAINT events_session_id_user_id_key")
    op.execute(
        "ALTER TABLE reputation.events ADD CONSTRAINT events_once UNIQUE (session_id, user_id, reason)"
    )
    # A ReverseSessionAwards request_id, per calling service: a repeat answers for its first session.
    op.execute(
        """
        CREATE TABLE reputation.reversal_requests (
            caller text NOT NULL,
            request_id uuid NOT NULL,
            session_id uuid NOT NULL REFERENCES reputation.paired_sessions (session_id),
            create_time timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (caller, request_id)
        )
        """
    )
    # Awards per unordered pair (low_user < high_user) and per user, per UTC day: the caps are
    # decided from these rows, locked in a fixed order (pair, then users by id) in the award's
    # transaction. A reversal frees no slot: these only ever grow.
    op.execute(
        """
        CREATE TABLE reputation.pair_day_awards (
            low_user uuid NOT NULL,
            high_user uuid NOT NULL,
            day date NOT NULL,
            sessions integer NOT NULL DEFAULT 0,
            PRIMARY KEY (low_user, high_user, day),
            CHECK (low_user < high_user)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE reputation.user_day_awards (
            user_id uuid NOT NULL,
            day date NOT NULL,
            points integer NOT NULL DEFAULT 0,
            PRIMARY KEY (user_id, day)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE reputation.reversal_requests")
    op.execute("DROP TABLE reputation.user_day_awards")
    op.execute("DROP TABLE reputation.pair_day_awards")
    op.execute("ALTER TABLE reputation.events DROP CONSTRAINT events_once")
    op.execute(
        "ALTER TABLE reputation.events "
        "ADD CONSTRAINT events_session_id_user_id_key UNIQUE (session_id, user_id)"
    )
    op.execute("ALTER TABLE reputation.events DROP COLUMN note")
    op.execute("DROP INDEX reputation.paired_sessions_open")
    op.execute(
        """
        ALTER TABLE reputation.paired_sessions
            DROP COLUMN awarded_user_ids, DROP COLUMN capped_user_ids, DROP COLUMN first_confirm_time,
            DROP COLUMN close_time, DROP COLUMN reverse_time
        """
    )
