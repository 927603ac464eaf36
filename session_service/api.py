"""The session servicers: validate the request, call the store, convert the result."""

from __future__ import annotations

from typing import Any

from asyncpg import Record
from grpc import aio
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from common import auth
from common.app import AppServer, ServiceBinding, build_server
from common.auth import Authenticator, current_user_id
from common.db import connection, create_engine, ping
from common.fields import Cursor, Fields, PageTokens, timestamp
from common.metrics import Metrics
from session_service import domain, store
from session_service.config import Config
from session_service.domain import Transition

DOMAIN = "interview.sessions"
STATUSES = {
    pb.SESSION_STATUS_ACTIVE: domain.ACTIVE,
    pb.SESSION_STATUS_PAUSED: domain.PAUSED,
    pb.SESSION_STATUS_COMPLETED: domain.COMPLETED,
}
STATUS_NUMBERS = {name: number for number, name in STATUSES.items()}
ROLES = {pb.MESSAGE_ROLE_QUESTION: domain.QUESTION, pb.MESSAGE_ROLE_ANSWER: domain.ANSWER}
ROLE_NUMBERS = {name: number for number, name in ROLES.items()}
# (create_time in microseconds, session_id) of the last session on the page.
SESSIONS_CURSOR = Cursor(Cursor.MOMENT, Cursor.UUID)
# The last message's sequence number.
MESSAGES_CURSOR = Cursor(Cursor.SEQUENCE)
# The last session's retake number.
RETAKES_CURSOR = Cursor(Cursor.NUMBER)


def _text(value: Any) -> str:
    return str(value) if value is not None else ""


def session_pb(row: Record) -> pb.Session:
    return pb.Session(
        session_id=str(row["session_id"]),
        user_id=str(row["user_id"]),
        partner_user_id=_text(row["partner_user_id"]),
        job_posting_id=_text(row["job_posting_id"]),
        status=STATUS_NUMBERS[row["status"]],
        current_question_number=row["current_question_number"],
        retake_number=row["retake_number"],
        original_session_id=_text(row["original_session_id"]),
        create_time=timestamp(row["create_time"]),
        update_time=timestamp(row["update_time"]),
        complete_time=timestamp(row["complete_time"]),
    )


def message_pb(row: Record) -> pb.SessionMessage:
    return pb.SessionMessage(
        message_id=str(row["message_id"]),
        session_id=str(row["session_id"]),
        role=ROLE_NUMBERS[row["role"]],
        content=row["content"],
        question_number=row["question_number"],
        create_time=timestamp(row["create_time"]),
    )


def _session_id(request: Any) -> str:
    fields = Fields()
    session_id = fields.uuid("session_id", request.session_id)
    fields.done()
    return session_id


class SessionApi(pb_grpc.SessionServiceServicer):
    """SessionService: end users acting on the sessions they participate in."""

    def __init__(self, db: AsyncEngine, tokens: PageTokens) -> None:
        self._db = db
        self._tokens = tokens

    async def CreateSession(
        self,
        request: pb.CreateSessionRequest,
        context: aio.ServicerContext[pb.CreateSessionRequest, pb.Session],
    ) -> pb.Session:
        caller = current_user_id()
        fields = Fields()
        job_posting_id = fields.uuid("job_posting_id", request.job_posting_id)
        partner = fields.optional_uuid("partner_user_id", request.partner_user_id)
        request_id = fields.optional_uuid("request_id", request.request_id)
        if partner == caller:
            fields.add("partner_user_id", "must differ from the caller")
        fields.done()
        async with connection(self._db) as conn:
            row = await store.create_session(conn, caller, job_posting_id, partner, request_id)
        return session_pb(row)

    async def GetSession(
        self, request: pb.GetSessionRequest, context: aio.ServicerContext[pb.GetSessionRequest, pb.Session]
    ) -> pb.Session:
        session_id = _session_id(request)
        async with connection(self._db) as conn:
            return session_pb(await store.get_session(conn, session_id, current_user_id()))

    async def ListSessions(
        self,
        request: pb.ListSessionsRequest,
        context: aio.ServicerContext[pb.ListSessionsRequest, pb.ListSessionsResponse],
    ) -> pb.ListSessionsResponse:
        caller = current_user_id()
        fields = Fields()
        status = None
        if request.status != pb.SESSION_STATUS_UNSPECIFIED:
            status = fields.enum("status", request.status, STATUSES, pb.SessionStatus)
        limit = fields.page_size(request.page_size)
        scope = f"sessions:{caller}:{status}"
        cursor = fields.page_token(self._tokens, scope, request.page_token, SESSIONS_CURSOR)
        fields.done()
        after = (store.from_micros(cursor[0]), cursor[1]) if cursor else None
        async with connection(self._db) as conn:
            rows = await store.list_sessions(conn, caller, status, after, limit + 1)
        token = self._tokens.next_token(
            scope, rows, limit, lambda last: [store.micros(last["create_time"]), str(last["session_id"])]
        )
        return pb.ListSessionsResponse(sessions=[session_pb(r) for r in rows[:limit]], next_page_token=token)

    async def _transition(self, request: Any, transition: Transition) -> pb.Session:
        session_id = _session_id(request)
        async with connection(self._db) as conn:
            return session_pb(await store.transition(conn, transition, session_id, current_user_id()))

    async def PauseSession(
        self,
        request: pb.PauseSessionRequest,
        context: aio.ServicerContext[pb.PauseSessionRequest, pb.Session],
    ) -> pb.Session:
        return await self._transition(request, domain.PAUSE)

    async def ResumeSession(
        self,
        request: pb.ResumeSessionRequest,
        context: aio.ServicerContext[pb.ResumeSessionRequest, pb.Session],
    ) -> pb.Session:
        return await self._transition(request, domain.RESUME)

    async def CompleteSession(
        self,
        request: pb.CompleteSessionRequest,
        context: aio.ServicerContext[pb.CompleteSessionRequest, pb.Session],
    ) -> pb.Session:
        return await self._transition(request, domain.COMPLETE)

    async def RetakeSession(
        self,
        request: pb.RetakeSessionRequest,
        context: aio.ServicerContext[pb.RetakeSessionRequest, pb.Session],
    ) -> pb.Session:
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        request_id = fields.optional_uuid("request_id", request.request_id)
        fields.done()
        async with connection(self._db) as conn:
            row = await store.retake_session(conn, session_id, current_user_id(), request_id)
        return session_pb(row)

    async def ListRetakes(
        self,
        request: pb.ListRetakesRequest,
        context: aio.ServicerContext[pb.ListRetakesRequest, pb.ListRetakesResponse],
    ) -> pb.ListRetakesResponse:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        limit = fields.page_size(request.page_size)
        scope = f"retakes:{caller}:{session_id}"
        cursor = fields.page_token(self._tokens, scope, request.page_token, RETAKES_CURSOR)
        fields.done()
        async with connection(self._db) as conn:
            rows = await store.list_retakes(conn, session_id, caller, cursor[0] if cursor else 0, limit + 1)
        token = self._tokens.next_token(scope, rows, limit, lambda last: [last["retake_number"]])
        return pb.ListRetakesResponse(sessions=[session_pb(r) for r in rows[:limit]], next_page_token=token)

    async def AppendMessage(
        self,
        request: pb.AppendMessageRequest,
        context: aio.ServicerContext[pb.AppendMessageRequest, pb.SessionMessage],
    ) -> pb.SessionMessage:
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        role = fields.enum("role", request.role, ROLES, pb.MessageRole)
        problem = domain.content_problem(request.content)
        if problem:
            fields.add("content", problem)
        request_id = fields.optional_uuid("request_id", request.request_id)
        fields.done()
        async with connection(self._db) as conn:
            row = await store.append_message(
                conn, session_id, current_user_id(), role, request.content, request_id
            )
        return message_pb(row)

    async def ListMessages(
        self,
        request: pb.ListMessagesRequest,
        context: aio.ServicerContext[pb.ListMessagesRequest, pb.ListMessagesResponse],
    ) -> pb.ListMessagesResponse:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        limit = fields.page_size(request.page_size)
        scope = f"messages:{caller}:{session_id}"
        cursor = fields.page_token(self._tokens, scope, request.page_token, MESSAGES_CURSOR)
        fields.done()
        async with connection(self._db) as conn:
            rows = await store.list_messages(conn, session_id, caller, cursor[0] if cursor else 0, limit + 1)
        kept = store.messages_that_fit(rows, limit)
        token = self._tokens.next_token(scope, rows, kept, lambda last: [last["seq"]])
        return pb.ListMessagesResponse(messages=[message_pb(r) for r in rows[:kept]], next_page_token=token)


class InternalApi(pb_grpc.SessionInternalServiceServicer):
    """SessionInternalService: other services, acting on any session."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def LookupSession(
        self,
        request: pb.LookupSessionRequest,
        context: aio.ServicerContext[pb.LookupSessionRequest, pb.Session],
    ) -> pb.Session:
        session_id = _session_id(request)
        async with connection(self._db) as conn:
            return session_pb(await store.get_session(conn, session_id, None))

    async def CompletePairedSession(
        self,
        request: pb.CompletePairedSessionRequest,
        context: aio.ServicerContext[pb.CompletePairedSessionRequest, pb.Session],
    ) -> pb.Session:
        session_id = _session_id(request)
        async with connection(self._db) as conn:
            return session_pb(await store.transition(conn, domain.COMPLETE_PAIRED, session_id, None))

    async def ReleaseJobPosting(
        self,
        request: pb.ReleaseJobPostingRequest,
        context: aio.ServicerContext[pb.ReleaseJobPostingRequest, pb.ReleaseJobPostingResponse],
    ) -> pb.ReleaseJobPostingResponse:
        fields = Fields()
        job_posting_id = fields.uuid("job_posting_id", request.job_posting_id)
        fields.done()
        async with connection(self._db) as conn:
            changed = await store.release_job_posting(conn, job_posting_id)
        return pb.ReleaseJobPostingResponse(sessions_updated=changed)


def create_server(config: Config) -> AppServer:
    """Everything the session service needs, wired; the caller starts and stops it."""
    engine = create_engine(config.database_url, config.pool_size, "session_service", config.limits)
    tokens = PageTokens(config.page_token_secret)
    app = build_server(
        config.listen,
        DOMAIN,
        Authenticator(config.jwt, config.service_jwks_file),
        [
            ServiceBinding(
                pb_grpc.add_SessionServiceServicer_to_server,
                SessionApi(engine, tokens),
                pb.DESCRIPTOR.services_by_name["SessionService"].full_name,
                auth.USERS,
            ),
            ServiceBinding(
                pb_grpc.add_SessionInternalServiceServicer_to_server,
                InternalApi(engine),
                pb.DESCRIPTOR.services_by_name["SessionInternalService"].full_name,
                auth.INTERNAL,
            ),
        ],
        probe=lambda: ping(engine),
        metrics=Metrics(config.metrics_listen, engine),
        tls=config.tls,
        max_concurrent_rpcs=config.limits.max_concurrent_rpcs,
        reuse_port=config.workers > 1,
    )
    app.on_stop.append(engine.dispose)
    return app
