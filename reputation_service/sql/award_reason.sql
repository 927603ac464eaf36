-- The cap that withholds a participant's point, or the award: the pair's cap first (it names the
-- farming), then the user's daily points. A limit of 0 is no limit. Counts are the day's so far,
-- as locked in the award's transaction, before this session.
-- Twin of reputation_service.domain.award_reason (tests/reputation_service/test_rule_parity.py).
CREATE OR REPLACE FUNCTION reputation.award_reason(
    pair_limit integer, user_limit integer, pair_sessions integer, user_points integer
) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE
        WHEN pair_limit > 0 AND pair_sessions >= pair_limit THEN 'CAPPED_PAIR_DAILY_LIMIT'
        WHEN user_limit > 0 AND user_points >= user_limit THEN 'CAPPED_USER_DAILY_LIMIT'
        ELSE 'MUTUAL_CONFIRMATION'
    END
$$;
