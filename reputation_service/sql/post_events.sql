-- Every ledger write (awards and caps, the window's close, reversals) goes through this function,
-- so scores and leaderboards always follow the events. It appends events for one session,
-- skipping any already written for that session, user and reason, and moves by the events really
-- written, in user-id order:
-- - the score: a positive delta is a confirmed session gained, a negative one (a reversal) one
--   taken back;
-- - the leaderboard rows of the week, month and all time of the moment the event counts at: now
--   for an award; for a reversal, the time of the award it reverses.
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
$$;
