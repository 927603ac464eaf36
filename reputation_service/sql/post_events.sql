-- Every ledger write (awards and caps, the window's close, reversals) goes through this function,
-- so scores and leaderboards always follow the events. It appends events for one session,
-- skipping any already written for that session, user and reason, and moves by the events really
-- written, in user-id order:
-- - the score: a positive delta is a confirmed session gained, a negative one (a reversal) one
--   taken back;
-- - the leaderboard rows of the week, month and all time of the moment the event counts at: now
--   for an award; for a reversal, the time of the award it reverses.
-- Events of delta 0 (a cap, the window's close) move nothing, so those two writes are skipped
-- when every written event is one: a capped pair (the farming case) writes only its events.
CREATE OR REPLACE FUNCTION reputation.post_events(
    p_session uuid, p_users uuid[], p_deltas integer[], p_reasons text[], p_note text
) RETURNS SETOF reputation.events LANGUAGE plpgsql AS $$
DECLARE
    written reputation.events[];
BEGIN
    WITH added AS (
        INSERT INTO reputation.events (event_id, user_id, session_id, delta, reason, note)
        SELECT gen_random_uuid(), d.user_id, p_session, d.delta, d.reason, p_note
          FROM unnest(p_users, p_deltas, p_reasons) AS d(user_id, delta, reason)
         ORDER BY d.user_id
        ON CONFLICT (session_id, user_id, reason) DO NOTHING
        RETURNING *
    )
    SELECT coalesce(array_agg(a ORDER BY a.user_id), '{}') INTO written FROM added a;
    IF EXISTS (SELECT 1 FROM unnest(written) w WHERE w.delta <> 0) THEN
        WITH moved AS (
            SELECT * FROM unnest(written) w WHERE w.delta <> 0
        ), scored AS (
            INSERT INTO reputation.scores AS s (user_id, score, confirmed_sessions, update_time)
            SELECT m.user_id, m.delta, sign(m.delta), now() FROM moved m
             ORDER BY m.user_id
            ON CONFLICT (user_id) DO UPDATE
               SET score = s.score + EXCLUDED.score,
                   confirmed_sessions = s.confirmed_sessions + EXCLUDED.confirmed_sessions,
                   update_time = now()
        ), counted AS (
            SELECT m.user_id, m.delta,
                   CASE WHEN m.reason = 'REVERSAL'
                        THEN (SELECT a.create_time FROM reputation.events a
                               WHERE a.session_id = m.session_id AND a.user_id = m.user_id
                                 AND a.reason = 'MUTUAL_CONFIRMATION')
                        ELSE m.create_time END AS at
              FROM moved m
        )
        INSERT INTO reputation.leaderboard AS l (kind, period_start, user_id, score)
        SELECT k.kind, reputation.period_start(k.kind, c.at), c.user_id, c.delta
          FROM counted c CROSS JOIN unnest(ARRAY['week', 'month', 'all']) AS k(kind)
         ORDER BY 1, 2, 3
        ON CONFLICT (kind, period_start, user_id) DO UPDATE SET score = l.score + EXCLUDED.score;
    END IF;
    RETURN QUERY SELECT * FROM unnest(written);
END
$$;
