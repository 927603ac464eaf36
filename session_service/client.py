"""Typed clients of SessionService and SessionInternalService; each Sync... twin blocks instead."""

from __future__ import annotations

from typing import TypeAlias

from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc as pb_grpc

from common.client import AsyncClient, SyncClient

Status: TypeAlias = pb.SessionStatus.ValueType


class SessionClient(AsyncClient["pb_grpc.SessionServiceAsyncStub"]):
    """SessionService over grpc.aio. Failed calls raise grpc.RpcError; see common.client.error_reason."""

    stub = pb_grpc.SessionServiceStub

    async def create_session(
        self, job_posting_id: str, partner_user_id: str = "", request_id: str = ""
    ) -> pb.Session:
        request = pb.CreateSessionRequest(
            job_posting_id=job_posting_id, partner_user_id=partner_user_id, request_id=request_id
        )
        return await self._stub.CreateSession(request, **self._call())

    async def get_session(self, session_id: str) -> pb.Session:
        return await self._stub.GetSession(pb.GetSessionRequest(session_id=session_id), **self._call())

    async def list_sessions(
        self, status: Status = pb.SESSION_STATUS_UNSPECIFIED, page_size: int = 0, page_token: str = ""
    ) -> pb.ListSessionsResponse:
        request = pb.ListSessionsRequest(status=status, page_size=page_size, page_token=page_token)
        return await self._stub.ListSessions(request, **self._call())

    async def pause_session(self, session_id: str) -> pb.Session:
        return await self._stub.PauseSession(pb.PauseSessionRequest(session_id=session_id), **self._call())

    async def resume_session(self, session_id: str) -> pb.Session:
        return await self._stub.ResumeSession(pb.ResumeSessionRequest(session_id=session_id), **self._call())

    async def complete_session(self, session_id: str) -> pb.Session:
        request = pb.CompleteSessionRequest(session_id=session_id)
        return await self._stub.CompleteSession(request, **self._call())

    async def retake_session(self, session_id: str, request_id: str = "") -> pb.Session:
        request = pb.RetakeSessionRequest(session_id=session_id, request_id=request_id)
        return await self._stub.RetakeSession(request, **self._call())

    async def list_retakes(
        self, session_id: str, page_size: int = 0, page_token: str = ""
    ) -> pb.ListRetakesResponse:
        request = pb.ListRetakesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
        return await self._stub.ListRetakes(request, **self._call())

    async def append_message(
        self, session_id: str, role: pb.MessageRole.ValueType, content: str, request_id: str = ""
    ) -> pb.SessionMessage:
        request = pb.AppendMessageRequest(
            session_id=session_id, role=role, content=content, request_id=request_id
        )
        return await self._stub.AppendMessage(request, **self._call())

    async def list_messages(
        self, session_id: str, page_size: int = 0, page_token: str = ""
    ) -> pb.ListMessagesResponse:
        request = pb.ListMessagesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
        return await self._stub.ListMessages(request, **self._call())


class SyncSessionClient(SyncClient[pb_grpc.SessionServiceStub]):
    stub = pb_grpc.SessionServiceStub

    def create_session(
        self, job_posting_id: str, partner_user_id: str = "", request_id: str = ""
    ) -> pb.Session:
        request = pb.CreateSessionRequest(
            job_posting_id=job_posting_id, partner_user_id=partner_user_id, request_id=request_id
        )
        return self._stub.CreateSession(request, **self._call())

    def get_session(self, session_id: str) -> pb.Session:
        return self._stub.GetSession(pb.GetSessionRequest(session_id=session_id), **self._call())

    def list_sessions(
        self, status: Status = pb.SESSION_STATUS_UNSPECIFIED, page_size: int = 0, page_token: str = ""
    ) -> pb.ListSessionsResponse:
        request = pb.ListSessionsRequest(status=status, page_size=page_size, page_token=page_token)
        return self._stub.ListSessions(request, **self._call())

    def pause_session(self, session_id: str) -> pb.Session:
        return self._stub.PauseSession(pb.PauseSessionRequest(session_id=session_id), **self._call())

    def resume_session(self, session_id: str) -> pb.Session:
        return self._stub.ResumeSession(pb.ResumeSessionRequest(session_id=session_id), **self._call())

    def complete_session(self, session_id: str) -> pb.Session:
        return self._stub.CompleteSession(pb.CompleteSessionRequest(session_id=session_id), **self._call())

    def retake_session(self, session_id: str, request_id: str = "") -> pb.Session:
        request = pb.RetakeSessionRequest(session_id=session_id, request_id=request_id)
        return self._stub.RetakeSession(request, **self._call())

    def list_retakes(
        self, session_id: str, page_size: int = 0, page_token: str = ""
    ) -> pb.ListRetakesResponse:
        request = pb.ListRetakesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
        return self._stub.ListRetakes(request, **self._call())

    def append_message(
        self, session_id: str, role: pb.MessageRole.ValueType, content: str, request_id: str = ""
    ) -> pb.SessionMessage:
        request = pb.AppendMessageRequest(
            session_id=session_id, role=role, content=content, request_id=request_id
        )
        return self._stub.AppendMessage(request, **self._call())

    def list_messages(
        self, session_id: str, page_size: int = 0, page_token: str = ""
    ) -> pb.ListMessagesResponse:
        request = pb.ListMessagesRequest(session_id=session_id, page_size=page_size, page_token=page_token)
        return self._stub.ListMessages(request, **self._call())


class SessionInternalClient(AsyncClient["pb_grpc.SessionInternalServiceAsyncStub"]):
    """SessionInternalService over grpc.aio, for service tokens carrying role sessions.internal."""

    stub = pb_grpc.SessionInternalServiceStub

    async def lookup_session(self, session_id: str) -> pb.Session:
        return await self._stub.LookupSession(pb.LookupSessionRequest(session_id=session_id), **self._call())

    async def complete_paired_session(self, session_id: str) -> pb.Session:
        request = pb.CompletePairedSessionRequest(session_id=session_id)
        return await self._stub.CompletePairedSession(request, **self._call())

    async def release_job_posting(self, job_posting_id: str) -> pb.ReleaseJobPostingResponse:
        request = pb.ReleaseJobPostingRequest(job_posting_id=job_posting_id)
        return await self._stub.ReleaseJobPosting(request, **self._call())


class SyncSessionInternalClient(SyncClient[pb_grpc.SessionInternalServiceStub]):
    stub = pb_grpc.SessionInternalServiceStub

    def lookup_session(self, session_id: str) -> pb.Session:
        return self._stub.LookupSession(pb.LookupSessionRequest(session_id=session_id), **self._call())

    def complete_paired_session(self, session_id: str) -> pb.Session:
        request = pb.CompletePairedSessionRequest(session_id=session_id)
        return self._stub.CompletePairedSession(request, **self._call())

    def release_job_posting(self, job_posting_id: str) -> pb.ReleaseJobPostingResponse:
        request = pb.ReleaseJobPostingRequest(job_posting_id=job_posting_id)
        return self._stub.ReleaseJobPosting(request, **self._call())
