-- Marks outbox rows delivered, many at once (reputation_service/marks.py), locked in session_id
-- order so that two replicas marking rows that both delivered (one after the other's lease ran
-- out) cannot deadlock. The transaction it runs in commits without waiting for the WAL flush: a
-- mark lost in a crash costs one more delivery by the relay, which CompletePairedSession answers
-- like the first. SET LOCAL lasts to the end of the transaction, its commit included, and no
-- further: the caller runs it alone, never inside another write's transaction.
CREATE OR REPLACE FUNCTION reputation.mark_delivered(session_ids uuid[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    SET LOCAL synchronous_commit TO off;
    WITH due AS (
        SELECT o.session_id FROM reputation.outbox o
         WHERE o.session_id = ANY (session_ids) AND o.deliver_time IS NULL
         ORDER BY o.session_id
           FOR UPDATE
    ), done AS (
        UPDATE reputation.outbox o SET deliver_time = now(), last_error = NULL
          FROM due
         WHERE o.session_id = due.session_id
        RETURNING o.session_id
    )
    UPDATE reputation.paired_sessions p SET last_known_status = 'completed'
     WHERE p.session_id IN (SELECT d.session_id FROM done d);
END
$$;
