"""Delivery marks commit without waiting for the WAL flush. A mark lost in a crash costs one more
delivery by the relay, which CompletePairedSession answers like the first, so a durable commit buys
the mark nothing; it cost about 100 us of PostgreSQL CPU per commit here, and a wait on the disk.
The statement moves into `reputation.mark_delivered`, which sets `synchronous_commit` off for the
transaction it runs in: its caller runs it alone, in a transaction of its own.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Many rows at once (marks.DeliveryMarks), locked in session_id order: two replicas marking rows
# that both delivered (one after the other's lease ran out) cannot deadlock. SET LOCAL lasts to the
# end of the transaction, its commit included, and no further.
_MARK_DELIVERED = """
CREATE FUNCTION reputation.mark_delivered(session_ids uuid[]) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL synchronous_commit TO off;
    WITH due AS (
        SELECT o.session_id FROM reputation.outbox o
         WHERE o.session_id = ANY (session_ids) AND o.deliver_time IS NULL
         ORDER BY o.session_id
           FOR UPDATE
    ), done AS (
        UPDATE reputation.outbox o SET deliver_time = now(), last_error = NULL
          FROM due
         WHERE o.session_id = due.session_id
        RETURNING o.session_id
    )
    UPDATE reputation.paired_sessions p SET last_known_status = 'completed'
     WHERE p.session_id IN (SELECT d.session_id FROM done d);
END
$$
"""


def upgrade() -> None:
    op.execute(_MARK_DELIVERED)


def downgrade() -> None:
    op.execute("DROP FUNCTION reputation.mark_delivered(uuid[])")
