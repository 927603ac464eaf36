-- What a confirmation looks like from outside: the session's row, whether its completion was
-- delivered, and who confirmed (sorted). ConfirmCompletion, GetConfirmation and RatePartner read it.
CREATE OR REPLACE VIEW reputation.confirmation_states AS
SELECT p.session_id, p.user_id, p.partner_user_id, p.last_known_status, p.award_time,
       p.awarded_user_ids::text[] AS awarded_user_ids, p.capped_user_ids::text[] AS capped_user_ids,
       p.first_confirm_time, p.close_time, p.reverse_time,
       (SELECT o.deliver_time FROM reputation.outbox o WHERE o.session_id = p.session_id) AS deliver_time,
       ARRAY(SELECT c.user_id::text FROM reputation.confirmations c
              WHERE c.session_id = p.session_id ORDER BY 1) AS confirmed_user_ids
  FROM reputation.paired_sessions p;
