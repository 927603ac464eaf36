-- The UTC day an award counts toward, whatever the session's time zone.
-- Twin of reputation_service.domain.award_day (tests/reputation_service/test_rule_parity.py).
CREATE OR REPLACE FUNCTION reputation.award_day(at timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE STRICT AS $$ SELECT (at AT TIME ZONE 'UTC')::date $$;
