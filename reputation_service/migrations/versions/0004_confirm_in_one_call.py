"""ConfirmCompletion in one round trip: the confirmation, the award decision against the day's
caps and every write it implies run in `reputation.confirm`, a server-side function whose plans
PostgreSQL keeps per connection. Ledger writes (awards, caps, the window's close, reversals) all
go through `reputation.post_events`, so scores always follow the events.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# What a confirmation looks like from outside: the session's row, whether its completion was
# delivered, and who confirmed (sorted).
_STATES = """
CREATE VIEW reputation.confirmation_states AS
SELECT p.session_id, p.user_id, p.partner_user_id, p.last_known_status, p.award_time,
       p.awarded_user_ids::text[] AS awarded_user_ids, p.capped_user_ids::text[] AS capped_user_ids,
       p.first_confirm_time, p.close_time, p.reverse_time,
       (SELECT o.deliver_time FROM reputation.outbox o WHERE o.session_id = p.session_id) AS deliver_time,
       ARRAY(SELECT c.user_id::text FROM reputation.confirmations c
              WHERE c.session_id = p.session_id ORDER BY 1) AS confirmed_user_ids
  FROM reputation.paired_sessions p
"""

# The rules the award statement decides with, as pure functions (tested with plain values):
# the UTC day an award counts toward, whether a half-confirmed session's window passed at a moment
# (written so that, inlined into the sweeper's query, it is a range on the open-sessions index),
# and the cap that withholds a participant's point, or the award: pair first (it names the farming),
# then the user's daily points. A limit of 0 is no limit. Counts are as locked in the award's
# transaction, before this session.
_AWARD_DAY = """
CREATE FUNCTION reputation.award_day(at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT (at AT TIME ZONE 'UTC')::date $$
"""
_WINDOW_PASSED = """
CREATE FUNCTION reputation.window_passed(
    first_confirm_time timestamptz, window_seconds double precision, at timestamptz
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(first_confirm_time <= at - make_interval(secs => window_seconds), false)
$$
"""
_AWARD_REASON = """
CREATE FUNCTION reputation.award_reason(
    pair_limit integer, user_limit integer, pair_sessions integer, user_points integer
) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE
        WHEN pair_limit > 0 AND pair_sessions >= pair_limit THEN 'CAPPED_PAIR_DAILY_LIMIT'
        WHEN user_limit > 0 AND user_points >= user_limit THEN 'CAPPED_USER_DAILY_LIMIT'
        ELSE 'MUTUAL_CONFIRMATION'
    END
$$
"""

# Appends ledger events for one session (skipping any already written for that session, user and
# reason) and moves the scores by the events really written, in user-id order: a positive delta
# is a confirmed session gained, a negative one (a reversal) one taken back.
_POST_EVENTS = """
CREATE FUNCTION reputation.post_events(
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
    )
    SELECT * FROM written ORDER BY user_id;
END
$$
"""

# Closes half-confirmed sessions whose window passed (all due ones up to `max_rows`, or the one
# named): the mark, a 0-delta event for the one who confirmed, and an outbox row the relays deliver
# like any other. SKIP LOCKED keeps sweepers on several replicas apart; a confirmation holding the
# row decides it (or, holding it itself, closes it through this function).
_CLOSE_EXPIRED = """
CREATE FUNCTION reputation.close_expired(window_seconds double precision, max_rows integer, only_session uuid)
RETURNS SETOF uuid LANGUAGE plpgsql AS $$
DECLARE
    closed uuid[];
BEGIN
    WITH due AS (
        SELECT session_id FROM reputation.paired_sessions
         WHERE award_time IS NULL AND close_time IS NULL AND first_confirm_time IS NOT NULL
           AND reputation.window_passed(first_confirm_time, window_seconds, now())
           AND (only_session IS NULL OR session_id = only_session)
         ORDER BY first_confirm_time
         LIMIT max_rows
           FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE reputation.paired_sessions p SET close_time = now()
          FROM due WHERE p.session_id = due.session_id
        RETURNING p.session_id
    )
    SELECT coalesce(array_agg(session_id ORDER BY session_id), '{}') INTO closed FROM marked;
    PERFORM reputation.post_events(
                c.session_id, ARRAY[c.user_id], ARRAY[0], ARRAY['PARTNER_DID_NOT_CONFIRM'], '')
       FROM reputation.confirmations c
      WHERE c.session_id = ANY (closed);
    INSERT INTO reputation.outbox (session_id, next_attempt_time)
    SELECT unnest(closed), now()
    ON CONFLICT (session_id) DO NOTHING;
    RETURN QUERY SELECT unnest(closed);
END
$$
"""

# One participant's confirmation, under the session row's lock (every confirmation of a session,
# the sweeper and a reversal take it, so each decision has one writer). A repeated request_id of
# the caller is about the session its first call named. A session this service has no row for
# returns no row unless its facts (`p_owner`...) come along, looked up in the session service; a
# caller who is not a participant gets the state back and writes nothing (the service refuses).
# A window that passed closes the session first, as the sweeper would. The second participant's
# confirmation decides each one's award against the day's counters, locked in a fixed order (the
# pair's row, then each user's by id) so concurrent awards neither deadlock nor both read a count
# under a cap, and writes the events, scores, counters, the award mark and the outbox row, born
# claimed for `lease_seconds` for the delivery the confirming call makes after commit.
# Returns the state as of this statement, and whether this call queued the completion.
_CONFIRM = """
CREATE FUNCTION reputation.confirm(
    p_session uuid, p_caller uuid, p_request uuid, p_owner uuid, p_partner uuid, p_status text,
    pair_limit integer, user_limit integer, window_seconds double precision, lease_seconds double precision
) RETURNS TABLE (state reputation.confirmation_states, queued boolean) LANGUAGE plpgsql AS $$
DECLARE
    s reputation.paired_sessions;
    confirmed uuid[];
    today date := reputation.award_day(now());
    pair_sessions integer;
    day_points integer[];
    deltas integer[];
    reasons text[];
    was_queued boolean := false;
BEGIN
    IF p_request IS NOT NULL THEN
        p_session := coalesce((SELECT r.session_id FROM reputation.confirmation_requests r
                                WHERE r.user_id = p_caller AND r.request_id = p_request), p_session);
    END IF;
    <<decide>>
    BEGIN
        SELECT * INTO s FROM reputation.paired_sessions WHERE session_id = p_session FOR UPDATE;
        IF NOT FOUND THEN
            IF p_owner IS NULL THEN
                RETURN;
            END IF;
            -- The first confirmation: its row starts the window.
            INSERT INTO reputation.paired_sessions
                   (session_id, user_id, partner_user_id, last_known_status, first_confirm_time)
            VALUES (p_session, p_owner, p_partner, p_status, now())
            ON CONFLICT (session_id) DO NOTHING;
            SELECT * INTO s FROM reputation.paired_sessions WHERE session_id = p_session FOR UPDATE;
        END IF;
        EXIT decide WHEN p_caller NOT IN (s.user_id, s.partner_user_id);
        IF s.award_time IS NULL AND s.close_time IS NULL
           AND reputation.window_passed(s.first_confirm_time, window_seconds, now()) THEN
            PERFORM reputation.close_expired(window_seconds, 1, p_session);
            EXIT decide;
        END IF;
        EXIT decide WHEN s.close_time IS NOT NULL;
        WITH remembered AS (
            INSERT INTO reputation.confirmation_requests (user_id, request_id, session_id)
            SELECT p_caller, p_request, p_session WHERE p_request IS NOT NULL
            ON CONFLICT (user_id, request_id) DO NOTHING
        ), added AS (
            INSERT INTO reputation.confirmations (session_id, user_id) VALUES (p_session, p_caller)
            ON CONFLICT (session_id, user_id) DO NOTHING
            RETURNING user_id
        )
        SELECT ARRAY(SELECT c.user_id FROM reputation.confirmations c WHERE c.session_id = p_session
                     UNION SELECT user_id FROM added ORDER BY 1)
          INTO confirmed;
        EXIT decide WHEN s.award_time IS NOT NULL OR cardinality(confirmed) < 2;

        -- Counters only grow within their day: a pair already at its cap stays there, so that read
        -- needs no lock (the farming case, and the most frequent one, takes none). Otherwise
        -- the pair's row and then each user's, by id, are locked and read again.
        SELECT a.sessions INTO pair_sessions FROM reputation.pair_day_awards a
         WHERE a.low_user = confirmed[1] AND a.high_user = confirmed[2] AND a.day = today;
        IF reputation.award_reason(pair_limit, 0, coalesce(pair_sessions, 0), 0)
           = 'CAPPED_PAIR_DAILY_LIMIT' THEN
            day_points := ARRAY[0, 0];
        ELSE
            INSERT INTO reputation.pair_day_awards (low_user, high_user, day)
            VALUES (confirmed[1], confirmed[2], today)
            ON CONFLICT (low_user, high_user, day) DO NOTHING;
            SELECT a.sessions INTO pair_sessions FROM reputation.pair_day_awards a
             WHERE a.low_user = confirmed[1] AND a.high_user = confirmed[2] AND a.day = today FOR UPDATE;
            INSERT INTO reputation.user_day_awards (user_id, day)
            VALUES (confirmed[1], today), (confirmed[2], today)
            ON CONFLICT (user_id, day) DO NOTHING;
            SELECT array_agg(u.points ORDER BY u.user_id) INTO day_points
              FROM (SELECT d.user_id, d.points FROM reputation.user_day_awards d
                     WHERE d.user_id = ANY (confirmed) AND d.day = today
                     ORDER BY d.user_id FOR UPDATE) u;
        END IF;
        reasons := ARRAY[reputation.award_reason(pair_limit, user_limit, pair_sessions, day_points[1]),
                         reputation.award_reason(pair_limit, user_limit, pair_sessions, day_points[2])];
        deltas := ARRAY[(reasons[1] = 'MUTUAL_CONFIRMATION')::integer,
                        (reasons[2] = 'MUTUAL_CONFIRMATION')::integer];

        PERFORM reputation.post_events(p_session, confirmed, deltas, reasons, '');
        WITH counted AS (
            UPDATE reputation.user_day_awards u SET points = u.points + d.delta
              FROM unnest(confirmed, deltas) AS d(user_id, delta)
             WHERE u.user_id = d.user_id AND u.day = today AND d.delta > 0
        ), paired AS (
            UPDATE reputation.pair_day_awards SET sessions = sessions + 1
             WHERE low_user = confirmed[1] AND high_user = confirmed[2] AND day = today AND 1 = ANY (deltas)
        ), queued AS (
            INSERT INTO reputation.outbox (session_id, attempts, next_attempt_time)
            VALUES (p_session, 1, now() + make_interval(secs => lease_seconds))
            ON CONFLICT (session_id) DO NOTHING
            RETURNING 1
        )
        UPDATE reputation.paired_sessions
           SET award_time = now(),
               awarded_user_ids = ARRAY(SELECT u FROM unnest(confirmed, deltas) AS d(u, x) WHERE x > 0),
               capped_user_ids = ARRAY(SELECT u FROM unnest(confirmed, deltas) AS d(u, x) WHERE x = 0)
         WHERE session_id = p_session
        RETURNING EXISTS (SELECT 1 FROM queued) INTO was_queued;
    END;
    RETURN QUERY SELECT c, was_queued FROM reputation.confirmation_states c WHERE c.session_id = p_session;
END
$$
"""

# A moderator's reversal of every positive award of the session (the caller holds the row's lock):
# compensating events carrying the note, and the session's mark.
_REVERSE_AWARDS = """
CREATE FUNCTION reputation.reverse_awards(p_session uuid, p_note text)
RETURNS SETOF reputation.events LANGUAGE plpgsql AS $$
DECLARE
    awarded uuid[];
    deltas integer[];
BEGIN
    SELECT array_agg(user_id ORDER BY user_id), array_agg(-delta ORDER BY user_id) INTO awarded, deltas
      FROM reputation.events WHERE session_id = p_session AND delta > 0;
    UPDATE reputation.paired_sessions SET reverse_time = now() WHERE session_id = p_session;
    RETURN QUERY SELECT * FROM reputation.post_events(
        p_session, awarded, deltas, array_fill('REVERSAL'::text, ARRAY[cardinality(awarded)]), p_note);
END
$$
"""


def upgrade() -> None:
    for statement in (
        _STATES,
        _AWARD_DAY,
        _WINDOW_PASSED,
        _AWARD_REASON,
        _POST_EVENTS,
        _CLOSE_EXPIRED,
        _CONFIRM,
        _REVERSE_AWARDS,
    ):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP FUNCTION reputation.reverse_awards(uuid, text)")
    op.execute(
        "DROP FUNCTION reputation.confirm(uuid, uuid, uuid, uuid, uuid, text, integer, integer, "
        "double precision, double precision)"
    )
    op.execute("DROP FUNCTION reputation.close_expired(double precision, integer, uuid)")
    op.execute("DROP FUNCTION reputation.post_events(uuid, uuid[], integer[], text[], text)")
    op.execute("DROP FUNCTION reputation.award_reason(integer, integer, integer, integer)")
    op.execute("DROP FUNCTION reputation.window_passed(timestamptz, double precision, timestamptz)")
    op.execute("DROP FUNCTION reputation.award_day(timestamptz)")
    op.execute("DROP VIEW reputation.confirmation_states")
