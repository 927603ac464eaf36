"""The reputation service's calls to SessionInternalService, with its own short-lived service token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc as pb_grpc

from common.auth import INTERNAL_ROLE, ServiceTokenSigner
from common.auth.signing import load_private_key
from common.client import channel_options
from common.config import ServiceSigning, TlsSettings
from common.errors import ServiceError, Unavailable
from common.tls import aio_channel
from reputation_service import domain
from reputation_service.domain import SessionFacts

SERVICE_NAME = "reputation"
# Codes a later attempt may not get: the session service down, slow, overloaded (its OVERLOADED
# is RESOURCE_EXHAUSTED) or the call cut. Any other code is the session service's verdict.
TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}
# Reconnect quickly after an outage: the relay's own backoff decides how often to retry.
# round_robin spreads calls over every session replica the target's DNS name resolves to.
# The typed clients' retry policy retries UNAVAILABLE within the call's deadline: a stream the
# server refused (more than its 100 per connection at once) is sent again, not failed.
CHANNEL_OPTIONS = [
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    *channel_options(),
]
STATUSES = {
    pb.SESSION_STATUS_ACTIVE: domain.ACTIVE,
    pb.SESSION_STATUS_PAUSED: domain.PAUSED,
    pb.SESSION_STATUS_COMPLETED: domain.COMPLETED,
}


class SessionsUnavailable(Unavailable):
    reason = "SESSIONS_UNAVAILABLE"

    def __init__(self, session_id: str, status_code: str = "UNAVAILABLE") -> None:
        super().__init__("the session service did not answer; retry later", session_id=session_id)
        # The transient gRPC code behind it, for logs (not told to callers).
        self.status_code = status_code


class PassedOn(ServiceError):
    """An error of the session service, passed on with the same code and reason."""

    def __init__(self, code: str, reason: str, message: str, metadata: dict[str, str]) -> None:
        super().__init__(message, **metadata)
        self.code = code
        self.reason = reason


def _passed_on(error: grpc.aio.AioRpcError, session_id: str) -> ServiceError:
    if error.code() in TRANSIENT:
        return SessionsUnavailable(session_id, error.code().name)
    # from_call reads code() and trailing_metadata(), which AioRpcError answers as a grpc.Call does;
    # the stubs take only grpc.Call.
    status = rpc_status.from_call(cast(grpc.Call, error))
    info = error_details_pb2.ErrorInfo()
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            detail.Unpack(info)
    if error.code() == grpc.StatusCode.NOT_FOUND:
        return domain.SessionNotFound(session_id)
    if info.reason and error.code() in (
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
    ):
        return PassedOn(error.code().name, info.reason, error.details() or "", dict(info.metadata))
    # Anything else (auth between services, a bug over there) is our internal error, not the
    # caller's; the relay reads its code to park the row (`relay.verdict`).
    raise error


def facts(session: pb.Session) -> SessionFacts:
    return SessionFacts(
        session_id=session.session_id,
        user_id=session.user_id,
        partner_user_id=session.partner_user_id or None,
        status=STATUSES[session.status],
    )


class SessionsClient:
    """LookupSession and CompletePairedSession, each with a deadline and a fresh service token.

    Each call's deadline is its caller's to give (`budget`, seconds): what is left of the
    incoming call's own deadline, or of a relay's lease; without one, `timeout` as configured.
    """

    def __init__(self, target: str, signing: ServiceSigning, tls: TlsSettings, timeout: float) -> None:
        self._channel = aio_channel(target, tls, CHANNEL_OPTIONS)
        self._stub = pb_grpc.SessionInternalServiceStub(self._channel)
        self._signer = ServiceTokenSigner(
            SERVICE_NAME, load_private_key(Path(signing.key_file).read_bytes()), signing.key_id
        )
        self.timeout = timeout
        self._lookups: dict[str, asyncio.Task[SessionFacts]] = {}

    def _metadata(self) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self._signer.token([INTERNAL_ROLE])}"),)

    async def lookup(self, session_id: str, budget: float | None = None) -> SessionFacts:
        """The session as the session service has it now. Lookups of one session that overlap in
        this process share one call, made with the first one's budget: partners who confirm at
        the same instant ask once, and a caller repeating calls about a session we hold no rows
        for cannot multiply the calls the session service gets. A waiter that goes away (its
        caller's deadline) leaves the shared call to the others."""
        task = self._lookups.get(session_id)
        if task is None or task.done():
            task = asyncio.create_task(self._lookup(session_id, budget))
            self._lookups[session_id] = task

            def forget(done: asyncio.Task[SessionFacts]) -> None:
                if self._lookups.get(session_id) is done:
                    del self._lookups[session_id]
                if not done.cancelled():
                    done.exception()  # retrieved: every waiter may have gone before it failed

            task.add_done_callback(forget)
        return await asyncio.shield(task)

    async def _lookup(self, session_id: str, budget: float | None) -> SessionFacts:
        try:
            session = await self._stub.LookupSession(
                pb.LookupSessionRequest(session_id=session_id),
                metadata=self._metadata(),
                timeout=self.timeout if budget is None else budget,
            )
        except grpc.aio.AioRpcError as error:
            raise _passed_on(error, session_id) from None
        return facts(session)

    async def complete_paired(self, session_id: str, budget: float | None = None) -> SessionFacts:
        try:
            session = await self._stub.CompletePairedSession(
                pb.CompletePairedSessionRequest(session_id=session_id),
                metadata=self._metadata(),
                timeout=self.timeout if budget is None else budget,
            )
        except grpc.aio.AioRpcError as error:
            raise _passed_on(error, session_id) from None
        return facts(session)

    async def close(self) -> None:
        await self._channel.close()
