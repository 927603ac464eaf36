-- One participant's confirmation of a paired session, in one statement: ConfirmCompletion's
-- decision, under the session row's lock (every confirmation of a session, the sweeper and a
-- reversal take it, so each decision has one writer).
-- - A repeated request_id of the caller is about the session its first call named.
-- - A session this service has no row for returns no row unless its facts (`p_owner`...) come
--   along, looked up in the session service; that first confirmation's row starts the window.
-- - What the confirmation does is the rule `confirmation_step`: a caller who is not a participant
--   gets the state back and writes nothing (the service refuses); a window that passed closes the
--   session first, as the sweeper would; the confirmation that completes the pair decides.
-- - Deciding: each participant's award or cap (`award_reason`) against the day's counters
--   (`award_day`), locked in a fixed order (the pair's row, then each user's by id) so concurrent
--   awards neither deadlock nor both read a count under a cap; then the events, scores and boards
--   (`post_events`), the counters, the award mark and the outbox row, born claimed for
--   `lease_seconds` for the delivery the confirming call makes after commit. The row keeps
--   `p_traceparent`, the confirming call's W3C trace context, for the relay's delivery to link to.
-- Returns the state as of this statement, and whether this call queued the completion.
CREATE OR REPLACE FUNCTION reputation.confirm(
    p_session uuid, p_caller uuid, p_request uuid, p_owner uuid, p_partner uuid, p_status text,
    pair_limit integer, user_limit integer, window_seconds double precision, lease_seconds double precision,
    p_traceparent text
) RETURNS TABLE (state reputation.confirmation_states, queued boolean) LANGUAGE plpgsql AS $$
DECLARE
    s reputation.paired_sessions;
    confirmed uuid[];
    step text;
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
        confirmed := ARRAY(SELECT c.user_id FROM reputation.confirmations c
                            WHERE c.session_id = p_session ORDER BY 1);
        step := reputation.confirmation_step(
            p_caller, s.user_id, s.partner_user_id, confirmed, s.award_time IS NOT NULL,
            s.close_time IS NOT NULL, s.first_confirm_time, window_seconds, now());
        IF step = 'close' THEN
            PERFORM reputation.close_expired(window_seconds, 1, p_session);
        END IF;
        EXIT decide WHEN step NOT IN ('record', 'decide');
        WITH remembered AS (
            INSERT INTO reputation.confirmation_requests (user_id, request_id, session_id)
            SELECT p_caller, p_request, p_session WHERE p_request IS NOT NULL
            ON CONFLICT (user_id, request_id) DO NOTHING
        )
        INSERT INTO reputation.confirmations (session_id, user_id) VALUES (p_session, p_caller)
        ON CONFLICT (session_id, user_id) DO NOTHING;
        EXIT decide WHEN step = 'record';
        confirmed := ARRAY[least(s.user_id, s.partner_user_id), greatest(s.user_id, s.partner_user_id)];

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
            INSERT INTO reputation.outbox (session_id, attempts, next_attempt_time, traceparent)
            VALUES (p_session, 1, now() + make_interval(secs => lease_seconds), p_traceparent)
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
$$;
