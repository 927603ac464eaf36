"""The reputation servicer: validate, consult the session service when needed, record, convert."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from grpc import aio
from interview.reputation.v1 import reputation_pb2 as pb
from interview.reputation.v1 import reputation_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from common import auth
from common.app import AppServer, ServiceBinding, build_server
from common.auth import Authenticator, current_user_id
from common.db import connection, create_engine, ping
from common.fields import Cursor, Fields, PageTokens, timestamp
from common.metrics import Metrics
from reputation_service import domain, relay, store
from reputation_service.config import Config
from reputation_service.domain import SessionFacts
from reputation_service.sessions_client import STATUSES, SessionsClient

DOMAIN = "interview.reputation"
# The inverse of the session client's map: a stored status back to the sessions package enum.
STATUS_NUMBERS = {name: number for number, name in STATUSES.items()}
# The last event's sequence number.
EVENTS_CURSOR = Cursor(Cursor.SEQUENCE)


def confirmation_pb(state: store.ConfirmationState, status: str) -> pb.Confirmation:
    """`state` as a Confirmation; `status` is the session's current one (`ReputationApi._status`)."""
    return pb.Confirmation(
        session_id=state.session.session_id,
        confirmed_user_ids=state.confirmed_user_ids,
        both_confirmed=state.both_confirmed,
        reputation_awarded=state.awarded,
        session_status=STATUS_NUMBERS[status],  # type: ignore[arg-type]
        # Told once we delivered, or once the session service itself says it is completed (a
        # delivery whose mark has not landed yet).
        completion_pending=state.awarded and not state.delivered and status != domain.COMPLETED,
    )


class ReputationApi(pb_grpc.ReputationServiceServicer):
    """ReputationService: participants confirm paired sessions; anyone reads reputations."""

    def __init__(self, db: AsyncEngine, sessions: SessionsClient, tokens: PageTokens, config: Config) -> None:
        self._db = db
        self._sessions = sessions
        self._tokens = tokens
        self._config = config

    async def _state(self, session_id: str) -> store.ConfirmationState | None:
        async with connection(self._db) as conn:
            return await store.confirmation_state(conn, session_id)

    def _timeout(self, context: aio.ServicerContext) -> float:
        """The deadline of a call to the session service made for `context`'s call: what is left
        of the caller's own deadline, at most SESSION_SERVICE_TIMEOUT_SECONDS."""
        remaining = context.time_remaining()
        configured = self._config.session_service_timeout
        return configured if remaining is None else max(0.0, min(configured, remaining))

    async def _status(
        self, state: store.ConfirmationState, looked_up: str | None, context: aio.ServicerContext
    ) -> str:
        """The session's status now: COMPLETED once our completion was delivered (terminal);
        otherwise the session service's word (pauses and resumes happen there), taken from the
        lookup this call already made or asked for now. No answer: SESSIONS_UNAVAILABLE."""
        if state.delivered:
            return domain.COMPLETED
        if looked_up is not None:
            return looked_up
        return (await self._sessions.lookup(state.session.session_id, self._timeout(context))).status

    async def _participant_view(
        self, session_id: str, caller: str, for_confirming: bool, context: aio.ServicerContext
    ) -> tuple[SessionFacts, store.ConfirmationState | None, str | None]:
        """The session as far as `caller` may act on it, our own rows for it if any, and the
        status the session service gave if it was asked. Participants come from our rows when
        we have them (they never change), otherwise from the session service."""
        known = await self._state(session_id)
        looked_up = None
        if known is None:
            session = await self._sessions.lookup(session_id, self._timeout(context))
            looked_up = session.status
            if session.status == domain.COMPLETED:
                # A concurrent confirmation may have completed it since we looked: our rows are
                # committed before any delivery, so a second look tells the two cases apart.
                known = await self._state(session_id)
        if known is not None:
            session = known.session
        refusal = domain.confirmation_refusal(session, caller, known is not None or not for_confirming)
        if refusal is not None:
            raise refusal
        return session, known, looked_up

    async def ConfirmCompletion(
        self, request: pb.ConfirmCompletionRequest, context: aio.ServicerContext
    ) -> pb.Confirmation:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        request_id = fields.optional_uuid("request_id", request.request_id)
        fields.done()
        if request_id is not None:
            async with connection(self._db) as conn:
                session_id = await store.session_of_request(conn, caller, request_id) or session_id
        session, _, looked_up = await self._participant_view(session_id, caller, True, context)
        # Taken before the transaction whose now() starts the outbox row's lease.
        lease_end = asyncio.get_running_loop().time() + self._config.outbox_lease
        state, queued = await store.confirm(self._db, session, caller, request_id, self._config.outbox_lease)
        if queued:
            delivered = await relay.deliver(
                self._db,
                self._sessions,
                session_id,
                1,
                self._timeout(context),
                lease_end,
                self._config.relay_max_backoff,
            )
            state = replace(state, delivered=delivered)
            if not delivered:
                # This call made the award: its reply reports it although the session service just
                # failed us, with the last status we saw; the relay finishes the job.
                return confirmation_pb(state, looked_up or state.session.status)
        return confirmation_pb(state, await self._status(state, looked_up, context))

    async def GetConfirmation(
        self, request: pb.GetConfirmationRequest, context: aio.ServicerContext
    ) -> pb.Confirmation:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        fields.done()
        # The view may have found our rows on a second look (a confirmation completed it meanwhile).
        session, known, looked_up = await self._participant_view(session_id, caller, False, context)
        if known is not None:
            return confirmation_pb(known, await self._status(known, looked_up, context))
        return pb.Confirmation(session_id=session_id, session_status=STATUS_NUMBERS[session.status])  # type: ignore[arg-type]

    async def GetReputation(
        self, request: pb.GetReputationRequest, context: aio.ServicerContext
    ) -> pb.Reputation:
        fields = Fields()
        user_id = fields.optional_uuid("user_id", request.user_id) or current_user_id()
        fields.done()
        async with connection(self._db) as conn:
            row = await store.reputation(conn, user_id)
        if row is None:
            return pb.Reputation(user_id=user_id)
        return pb.Reputation(
            user_id=user_id,
            score=row["score"],
            confirmed_sessions=row["confirmed_sessions"],
            update_time=timestamp(row["update_time"]),
        )

    async def ListReputationEvents(
        self, request: pb.ListReputationEventsRequest, context: aio.ServicerContext
    ) -> pb.ListReputationEventsResponse:
        caller = current_user_id()
        fields = Fields()
        user_id = fields.optional_uuid("user_id", request.user_id) or caller
        limit = fields.page_size(request.page_size)
        scope = f"events:{caller}:{user_id}"
        cursor = fields.page_token(self._tokens, scope, request.page_token, EVENTS_CURSOR)
        fields.done()
        async with connection(self._db) as conn:
            rows = await store.events(conn, user_id, cursor[0] if cursor else None, limit + 1)
        token = self._tokens.next_token(scope, rows, limit, lambda last: [last["seq"]])
        return pb.ListReputationEventsResponse(
            events=[
                pb.ReputationEvent(
                    event_id=str(row["event_id"]),
                    user_id=str(row["user_id"]),
                    session_id=str(row["session_id"]),
                    delta=row["delta"],
                    reason=row["reason"],
                    create_time=timestamp(row["create_time"]),
                )
                for row in rows[:limit]
            ],
            next_page_token=token,
        )


def create_server(config: Config) -> AppServer:
    """Everything the reputation service needs, wired, relay included; the caller starts it."""
    engine = create_engine(config.database_url, config.pool_size, "reputation_service", config.limits)
    sessions = SessionsClient(
        config.session_service_target, config.signing, config.tls, config.session_service_timeout
    )
    outbox_relay = relay.Relay(
        engine,
        sessions,
        config.relay_interval,
        config.outbox_lease,
        config.relay_max_backoff,
        config.session_service_timeout,
    )
    metrics = Metrics(config.metrics_listen, engine)
    # The relay counts the backlog after each pass (at least every relay_interval); scrapes only
    # read its last count, since they run on a thread and the database is async.
    metrics.gauge(
        "outbox_backlog_rows",
        "Outbox rows not yet delivered and not dead, across all replicas (aggregate with max, not sum).",
        lambda: outbox_relay.backlog[0],
    )
    metrics.gauge(
        "outbox_oldest_undelivered_age_seconds",
        "Age of the oldest undelivered outbox row (dead rows aside); 0 when there is none.",
        outbox_relay.oldest_age,
    )
    metrics.gauge(
        "outbox_dead_rows",
        "Outbox rows the session service refused for good, parked until `replay-outbox` "
        "(across all replicas: aggregate with max).",
        lambda: outbox_relay.dead_rows,
    )
    app = build_server(
        config.listen,
        DOMAIN,
        Authenticator(config.jwt, config.service_jwks_file),
        [
            ServiceBinding(
                pb_grpc.add_ReputationServiceServicer_to_server,
                ReputationApi(engine, sessions, PageTokens(config.page_token_secret), config),
                pb.DESCRIPTOR.services_by_name["ReputationService"].full_name,
                auth.USERS,
            )
        ],
        probe=lambda: ping(engine),
        metrics=metrics,
        tls=config.tls,
        max_concurrent_rpcs=config.limits.max_concurrent_rpcs,
        reuse_port=config.workers > 1,
    )
    app.on_start.append(outbox_relay.start)
    # In-flight calls finish first (server.stop), then the relay finishes its current batch.
    app.on_stop.extend([outbox_relay.stop, sessions.close, engine.dispose])
    return app
