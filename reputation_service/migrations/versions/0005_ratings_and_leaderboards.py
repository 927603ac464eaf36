"""Ratings between partners, and leaderboards by ISO week, UTC month and all time.

Every ledger write already goes through `reputation.post_events`; its new body also moves the
leaderboard rows, so a board row always equals the sum of its period's events (a reversal counts
in the period of the award it reverses).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from reputation_service.migrations import earlier

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
REVISION_0004 = "0004_confirm_in_one_call.py"

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

# The period of kind `kind` that the moment `at` falls in, in UTC.
_PERIOD_START = """
CREATE FUNCTION reputation.period_start(kind text, at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE kind
        WHEN 'week' THEN date_trunc('week', at AT TIME ZONE 'UTC')::date
        WHEN 'month' THEN date_trunc('month', at AT TIME ZONE 'UTC')::date
        ELSE date '1970-01-01'
    END
$$
"""

# As in 0004, and the leaderboards: each written event with a delta moves its user's rows for
# the week, month and all time of the moment it counts at (now for an award; for a reversal, the
# time of the award it reverses).
_POST_EVENTS = """
CREATE OR REPLACE FUNCTION reputation.post_events(
    p_session uuid, p_users uuid[], p_deltas integer[], p_reasons text[], p_note text
) RETURNS SETOF reputation.events LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH written AS (
        INSERT INTO reputation.events (event_id, user_id, session_id, delta, reason, note)
        SELECT gen_random_uuid(), d.user_id, p_session, d.delta, d.reason, p_note
          FROM unnest(p_users, p_deltas, p_reasons) AS d(user_id, delta, reason)
         ORDER BY d.user_id
        ON CONFLICT (session_id, user_id, reason) DO NOTHING
        RETURNING *
    ), scored AS (
        INSERT INTO reputation.scores AS s (user_id, score, confirmed_sessions, update_time)
        SELECT w.user_id, w.delta, sign(w.delta), now() FROM written w WHERE w.delta <> 0
         ORDER BY w.user_id
        ON CONFLICT (user_id) DO UPDATE
           SET score = s.score + EXCLUDED.score,
               confirmed_sessions = s.confirmed_sessions + EXCLUDED.confirmed_sessions,
               update_time = now()
    ), counted AS (
        SELECT w.user_id, w.delta,
               CASE WHEN w.reason = 'REVERSAL'
                    THEN (SELECT a.create_time FROM reputation.events a
                           WHERE a.session_id = w.session_id AND a.user_id = w.user_id
                             AND a.reason = 'MUTUAL_CONFIRMATION')
                    ELSE w.create_time END AS at
          FROM written w WHERE w.delta <> 0
    ), ranked AS (
        INSERT INTO reputation.leaderboard AS l (kind, period_start, user_id, score)
        SELECT k.kind, reputation.period_start(k.kind, c.at), c.user_id, c.delta
          FROM counted c CROSS JOIN unnest(ARRAY['week', 'month', 'all']) AS k(kind)
         ORDER BY 1, 2, 3
        ON CONFLICT (kind, period_start, user_id) DO UPDATE SET score = l.score + EXCLUDED.score
    )
    SELECT * FROM written ORDER BY user_id;
END
$$
"""
# The boards of the ledger so far, as post_events would have written them.
_BACKFILL = """
INSERT INTO reputation.leaderboard (kind, period_start, user_id, score)
SELECT k.kind, reputation.period_start(k.kind, coalesce(a.create_time, e.create_time)),
       e.user_id, sum(e.delta)
  FROM reputation.events e
  LEFT JOIN reputation.events a
    ON e.reason = 'REVERSAL' AND a.session_id = e.session_id AND a.user_id = e.user_id
   AND a.reason = 'MUTUAL_CONFIRMATION'
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
    op.execute(_PERIOD_START)
    op.execute(_POST_EVENTS)
    op.execute(_BACKFILL)


def downgrade() -> None:
    op.execute(
        earlier.statement(REVISION_0004, "_POST_EVENTS").replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
        )
    )
    op.execute("DROP FUNCTION reputation.period_start(text, timestamptz)")
    op.execute("DROP TABLE reputation.leaderboard")
    op.execute("ALTER TABLE reputation.scores DROP COLUMN rating_count, DROP COLUMN rating_sum")
    op.execute("DROP TABLE reputation.ratings")
