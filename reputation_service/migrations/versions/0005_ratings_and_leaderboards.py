"""Ratings between partners, and leaderboards by ISO week, UTC month and all time.

Every ledger write goes through `reputation.post_events` (sql/post_events.sql), which moves the
leaderboard rows too, so a board row always equals the sum of its period's events (a reversal
counts in the period of the award it reverses). This revision fills the boards from the ledger so
far.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# One rating per rater and session; the rated user's count and sum sit with their score.
_RATINGS = """
CREATE TABLE reputation.ratings (
    session_id uuid NOT NULL REFERENCES reputation.paired_sessions (session_id),
    rater_user_id uuid NOT NULL,
    rated_user_id uuid NOT NULL,
    rating smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment text NOT NULL DEFAULT '',
    request_id uuid,
    create_time timestamptz NOT NULL DEFAULT now(),
    seq bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (session_id, rater_user_id),
    CHECK (rater_user_id <> rated_user_id)
)
"""
_RATINGS_INDEXES = (
    # What a user received, newest first (ListPartnerRatings pages on seq).
    "CREATE INDEX ratings_received ON reputation.ratings (rated_user_id, seq DESC)",
    # A RatePartner request_id, per rater: a repeat answers with the first call's rating.
    "CREATE UNIQUE INDEX ratings_request ON reputation.ratings (rater_user_id, request_id) "
    "WHERE request_id IS NOT NULL",
)
_SCORE_RATINGS = """
ALTER TABLE reputation.scores
    ADD COLUMN rating_count bigint NOT NULL DEFAULT 0,
    ADD COLUMN rating_sum bigint NOT NULL DEFAULT 0
"""

# Reputation gained per user and period: kind 'week' (period_start the ISO week's Monday),
# 'month' (its first day) or 'all' (period_start 1970-01-01). The ranking index keys on -score so
# that "score descending, then user_id" is one ascending range: a page after (score, user_id) is
# an index range scan from that key, with no sort, whatever the rank.
_LEADERBOARD = """
CREATE TABLE reputation.leaderboard (
    kind text NOT NULL CHECK (kind IN ('week', 'month', 'all')),
    period_start date NOT NULL,
    user_id uuid NOT NULL,
    score bigint NOT NULL,
    PRIMARY KEY (kind, period_start, user_id)
)
"""
_LEADERBOARD_INDEX = (
    "CREATE INDEX leaderboard_ranking ON reputation.leaderboard (kind, period_start, (-score), user_id) "
    "WHERE score > 0"
)

# The boards of the ledger so far, as post_events would have written them (the periods as
# sql/period_start.sql computes them).
_BACKFILL = """
INSERT INTO reputation.leaderboard (kind, period_start, user_id, score)
SELECT k.kind,
       CASE k.kind
           WHEN 'week' THEN date_trunc('week', m.at AT TIME ZONE 'UTC')::date
           WHEN 'month' THEN date_trunc('month', m.at AT TIME ZONE 'UTC')::date
           ELSE date '1970-01-01'
       END,
       e.user_id, sum(e.delta)
  FROM reputation.events e
  LEFT JOIN reputation.events a
    ON e.reason = 'REVERSAL' AND a.session_id = e.session_id AND a.user_id = e.user_id
   AND a.reason = 'MUTUAL_CONFIRMATION'
 CROSS JOIN LATERAL (SELECT coalesce(a.create_time, e.create_time) AS at) m
 CROSS JOIN unnest(ARRAY['week', 'month', 'all']) AS k(kind)
 WHERE e.delta <> 0
 GROUP BY 1, 2, 3
"""


def upgrade() -> None:
    op.execute(_RATINGS)
    for statement in _RATINGS_INDEXES:
        op.execute(statement)
    op.execute(_SCORE_RATINGS)
    op.execute(_LEADERBOARD)
    op.execute(_LEADERBOARD_INDEX)
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.execute("DROP TABLE reputation.leaderboard")
    op.execute("ALTER TABLE reputation.scores DROP COLUMN rating_count, DROP COLUMN rating_sum")
    op.execute("DROP TABLE reputation.ratings")
