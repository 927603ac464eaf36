-- A moderator's reversal of every positive award of the session (the caller holds the session
-- row's lock, as every decision about a session does): compensating events carrying the note,
-- and the session's mark.
CREATE OR REPLACE FUNCTION reputation.reverse_awards(p_session uuid, p_note text)
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
$$;
