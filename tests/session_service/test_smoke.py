"""A first walk through the lifecycle over a real channel."""

from interview.sessions.v1 import sessions_pb2 as pb

from tests.helpers import new_id


async def test_a_created_session_can_be_completed_and_read_back(sessions, as_user, db):
    owner = new_id()
    created = await sessions.CreateSession(
        pb.CreateSessionRequest(job_posting_id=new_id()), metadata=as_user(owner)
    )
    assert created.status == pb.SESSION_STATUS_ACTIVE
    done = await sessions.CompleteSession(
        pb.CompleteSessionRequest(session_id=created.session_id), metadata=as_user(owner)
    )
    assert done.status == pb.SESSION_STATUS_COMPLETED
    assert (
        await db.fetchval("SELECT status FROM sessions.sessions WHERE session_id = $1", created.session_id)
        == "completed"
    )
