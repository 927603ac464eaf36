"""A first mutual confirmation across both real services."""

from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import new_id


async def test_two_confirmations_complete_the_session_and_award_both(sessions, reputation, as_user):
    owner, buddy = new_id(), new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=buddy), metadata=as_user(owner)
    )
    first = await reputation.ConfirmCompletion(
        rpb.ConfirmCompletionRequest(session_id=created.session_id), metadata=as_user(owner)
    )
    assert (first.both_confirmed, first.reputation_awarded) == (False, False)
    second = await reputation.ConfirmCompletion(
        rpb.ConfirmCompletionRequest(session_id=created.session_id), metadata=as_user(buddy)
    )
    assert second.both_confirmed and second.reputation_awarded and not second.completion_pending
    assert second.session_status == pb.SESSION_STATUS_COMPLETED
    seen = await sessions.GetSession(
        pb.GetSessionRequest(session_id=created.session_id), metadata=as_user(owner)
    )
    assert seen.status == pb.SESSION_STATUS_COMPLETED
    for user in (owner, buddy):
        score = await reputation.GetReputation(rpb.GetReputationRequest(), metadata=as_user(user))
        assert (score.score, score.confirmed_sessions) == (1, 1)
