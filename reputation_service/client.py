"""Typed clients of ReputationService (user tokens); SyncReputationClient blocks instead of awaiting."""

from __future__ import annotations

from interview.reputation.v1 import reputation_pb2 as pb
from interview.reputation.v1 import reputation_pb2_grpc as pb_grpc

from common.client import AsyncClient, SyncClient


class ReputationClient(AsyncClient["pb_grpc.ReputationServiceAsyncStub"]):
    """ReputationService over grpc.aio. Failed calls raise grpc.RpcError; see common.client.error_reason."""

    stub = pb_grpc.ReputationServiceStub

    async def confirm_completion(self, session_id: str, request_id: str = "") -> pb.Confirmation:
        request = pb.ConfirmCompletionRequest(session_id=session_id, request_id=request_id)
        return await self._stub.ConfirmCompletion(request, **self._call())

    async def get_confirmation(self, session_id: str) -> pb.Confirmation:
        request = pb.GetConfirmationRequest(session_id=session_id)
        return await self._stub.GetConfirmation(request, **self._call())

    async def get_reputation(self, user_id: str = "") -> pb.Reputation:
        """`user_id` empty means the caller."""
        return await self._stub.GetReputation(pb.GetReputationRequest(user_id=user_id), **self._call())

    async def list_reputation_events(
        self, user_id: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.ListReputationEventsResponse:
        """`user_id` empty means the caller; newest first."""
        request = pb.ListReputationEventsRequest(user_id=user_id, page_size=page_size, page_token=page_token)
        return await self._stub.ListReputationEvents(request, **self._call())


class SyncReputationClient(SyncClient[pb_grpc.ReputationServiceStub]):
    """ReputationService over a blocking grpc.Channel: the methods of ReputationClient."""

    stub = pb_grpc.ReputationServiceStub

    def confirm_completion(self, session_id: str, request_id: str = "") -> pb.Confirmation:
        request = pb.ConfirmCompletionRequest(session_id=session_id, request_id=request_id)
        return self._stub.ConfirmCompletion(request, **self._call())

    def get_confirmation(self, session_id: str) -> pb.Confirmation:
        return self._stub.GetConfirmation(pb.GetConfirmationRequest(session_id=session_id), **self._call())

    def get_reputation(self, user_id: str = "") -> pb.Reputation:
        return self._stub.GetReputation(pb.GetReputationRequest(user_id=user_id), **self._call())

    def list_reputation_events(
        self, user_id: str = "", page_size: int = 0, page_token: str = ""
    ) -> pb.ListReputationEventsResponse:
        request = pb.ListReputationEventsRequest(user_id=user_id, page_size=page_size, page_token=page_token)
        return self._stub.ListReputationEvents(request, **self._call())
