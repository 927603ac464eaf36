-- The first day of the leaderboard period of kind `kind` ('week': the ISO week's Monday, 'month',
-- 'all': 1970-01-01) that the moment `at` falls in, in UTC.
-- Twin of reputation_service.domain.period_start (tests/reputation_service/test_rule_parity.py).
CREATE OR REPLACE FUNCTION reputation.period_start(kind text, at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE kind
        WHEN 'week' THEN date_trunc('week', at AT TIME ZONE 'UTC')::date
        WHEN 'month' THEN date_trunc('month', at AT TIME ZONE 'UTC')::date
        ELSE date '1970-01-01'
    END
$$;
