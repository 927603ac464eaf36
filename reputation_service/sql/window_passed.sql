-- Whether a half-confirmed session's window passed at the moment `at`: never without a first
-- confirmation. Written so that, inlined into the sweeper's query, it is a range on the
-- open-sessions index.
-- Twin of reputation_service.domain.window_passed (tests/reputation_service/test_rule_parity.py).
CREATE OR REPLACE FUNCTION reputation.window_passed(
    first_confirm_time timestamptz, window_seconds double precision, at timestamptz
) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(first_confirm_time <= at - make_interval(secs => window_seconds), false)
$$;
