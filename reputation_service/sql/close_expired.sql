-- Closes half-confirmed sessions whose window passed (every due one up to `max_rows`, or the one
-- named): the mark, a 0-delta PARTNER_DID_NOT_CONFIRM event for the one who confirmed, and an
-- outbox row the relays deliver like any other. SKIP LOCKED keeps sweepers on several replicas
-- apart; a confirmation holding the row decides it (or, holding it itself, closes it through this
-- function). The sweeper calls it every RELAY_INTERVAL_SECONDS.
CREATE OR REPLACE FUNCTION reputation.close_expired(
    window_seconds double precision, max_rows integer, only_session uuid
) RETURNS SETOF uuid LANGUAGE plpgsql AS $$
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
$$;
