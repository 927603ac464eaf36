"""The reputation servicers: validate, call the use case or the store, convert."""

from __future__ import annotations

from datetime import timedelta

from asyncpg import Record
from grpc import aio
from interview.reputation.v1 import reputation_pb2 as pb
from interview.reputation.v1 import reputation_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from common import auth
from common.app import AppServer, ServiceBinding, build_server
from common.auth import Authenticator, current_service, current_user_id
from common.db import connection, create_engine, ping
from common.fields import Cursor, Fields, PageTokens, timestamp
from common.metrics import Metrics
from reputation_service import confirming, domain, relay, store, sweeper
from reputation_service.config import Config
from reputation_service.sessions_client import STATUSES, SessionsClient

DOMAIN = "interview.reputation"
# The inverse of the session client's map: a stored status back to the sessions package enum.
STATUS_NUMBERS = {name: number for number, name in STATUSES.items()}
# The last event's sequence number.
EVENTS_CURSOR = Cursor(Cursor.SEQUENCE)


def confirmation_pb(view: confirming.View) -> pb.Confirmation:
    state = view.state
    reply = pb.Confirmation(
        session_id=view.session_id,
        session_status=STATUS_NUMBERS[view.status],  # type: ignore[arg-type]
        completion_pending=view.completion_pending,
        expire_time=timestamp(view.expire_time),
    )
    if state is not None:
        reply.confirmed_user_ids.extend(state.confirmed_user_ids)
        reply.both_confirmed = state.both_confirmed
        reply.reputation_awarded = state.awarded
        reply.capped_user_ids.extend(state.capped_user_ids)
        reply.closed_unconfirmed = state.closed
        reply.reversed = state.reversed
    return reply


def event_pb(row: Record) -> pb.ReputationEvent:
    return pb.ReputationEvent(
        event_id=str(row["event_id"]),
        user_id=str(row["user_id"]),
        session_id=str(row["session_id"] or ""),
        delta=row["delta"],
        reason=row["reason"],
        note=row["note"],
        create_time=timestamp(row["create_time"]),
    )


def _session_call_timeout(context: aio.ServicerContext, configured: float) -> float:
    """The deadline of a call to the session service made for `context`'s call: what is left of
    the caller's own deadline, at most SESSION_SERVICE_TIMEOUT_SECONDS."""
    remaining = context.time_remaining()
    return configured if remaining is None else max(0.0, min(configured, remaining))


class ReputationApi(pb_grpc.ReputationServiceServicer):
    """ReputationService: participants confirm paired sessions; anyone reads reputations."""

    def __init__(
        self,
        db: AsyncEngine,
        sessions: SessionsClient,
        tokens: PageTokens,
        rules: confirming.Rules,
        timeout: float,
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._tokens = tokens
        self._rules = rules
        self._timeout = timeout

    async def ConfirmCompletion(
        self, request: pb.ConfirmCompletionRequest, context: aio.ServicerContext
    ) -> pb.Confirmation:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        request_id = fields.optional_uuid("request_id", request.request_id)
        fields.done()
        view = await confirming.confirm_completion(
            self._db,
            self._sessions,
            self._rules,
            caller,
            session_id,
            request_id,
            _session_call_timeout(context, self._timeout),
        )
        return confirmation_pb(view)

    async def GetConfirmation(
        self, request: pb.GetConfirmationRequest, context: aio.ServicerContext
    ) -> pb.Confirmation:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        fields.done()
        view = await confirming.get_confirmation(
            self._db,
            self._sessions,
            self._rules,
            caller,
            session_id,
            _session_call_timeout(context, self._timeout),
        )
        return confirmation_pb(view)

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
            rows = await store.events(conn, user_id, caller, cursor[0] if cursor else None, limit + 1)
        token = self._tokens.next_token(scope, rows, limit, lambda last: [last["seq"]])
        return pb.ListReputationEventsResponse(
            events=[event_pb(row) for row in rows[:limit]], next_page_token=token
        )


class ModerationApi(pb_grpc.ReputationInternalServiceServicer):
    """ReputationInternalService: moderators (service tokens with role reputation.moderate)."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def ReverseSessionAwards(
        self, request: pb.ReverseSessionAwardsRequest, context: aio.ServicerContext
    ) -> pb.ReverseSessionAwardsResponse:
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        request_id = fields.optional_uuid("request_id", request.request_id)
        problem = domain.reversal_note_problem(request.reason)
        if problem:
            fields.add("reason", problem)
        fields.done()
        rows = await store.reverse(self._db, session_id, request.reason, current_service(), request_id)
        return pb.ReverseSessionAwardsResponse(events=[event_pb(row) for row in rows])


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
    rules = confirming.Rules(
        caps=domain.Caps(config.pair_daily_award_limit, config.user_daily_award_limit),
        window=timedelta(seconds=config.confirmation_window),
        lease=config.outbox_lease,
        max_backoff=config.relay_max_backoff,
    )
    window_sweeper = sweeper.Sweeper(engine, rules.window, config.relay_interval)
    app = build_server(
        config.listen,
        DOMAIN,
        Authenticator(config.jwt, config.service_jwks_file),
        [
            ServiceBinding(
                pb_grpc.add_ReputationServiceServicer_to_server,
                ReputationApi(
                    engine,
                    sessions,
                    PageTokens(config.page_token_secret),
                    rules,
                    config.session_service_timeout,
                ),
                pb.DESCRIPTOR.services_by_name["ReputationService"].full_name,
                auth.USERS,
            ),
            ServiceBinding(
                pb_grpc.add_ReputationInternalServiceServicer_to_server,
                ModerationApi(engine),
                pb.DESCRIPTOR.services_by_name["ReputationInternalService"].full_name,
                auth.MODERATORS,
            ),
        ],
        probe=lambda: ping(engine),
        metrics=metrics,
        tls=config.tls,
        max_concurrent_rpcs=config.limits.max_concurrent_rpcs,
        reuse_port=config.workers > 1,
    )
    app.on_start.extend([outbox_relay.start, window_sweeper.start])
    # In-flight calls finish first (server.stop), then the relay finishes its current batch.
    app.on_stop.extend([outbox_relay.stop, window_sweeper.stop, sessions.close, engine.dispose])
    return app
