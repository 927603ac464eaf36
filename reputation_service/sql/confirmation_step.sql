-- What one participant's confirmation does, decided under the session row's lock:
-- 'refuse'  not a participant: nothing is written (the service answers SESSION_NOT_FOUND);
-- 'closed'  the window closed earlier: nothing is written;
-- 'close'   the window passed with nobody closing it yet: closed now, as the sweeper would;
-- 'decide'  it completes the pair: recorded, and the awards are decided now;
-- 'record'  recorded (a repeat records nothing new).
-- `confirmed` is who had confirmed before this call.
-- Twin of reputation_service.domain.confirmation_step (tests/reputation_service/test_rule_parity.py).
CREATE OR REPLACE FUNCTION reputation.confirmation_step(
    caller uuid, owner uuid, partner uuid, confirmed uuid[], decided boolean, closed boolean,
    first_confirm_time timestamptz, window_seconds double precision, at timestamptz
) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN caller IS DISTINCT FROM owner AND caller IS DISTINCT FROM partner THEN 'refuse'
        WHEN closed THEN 'closed'
        WHEN NOT decided AND reputation.window_passed(first_confirm_time, window_seconds, at) THEN 'close'
        WHEN NOT decided AND ARRAY[owner, partner] <@ array_append(confirmed, caller) THEN 'decide'
        ELSE 'record'
    END
$$;
