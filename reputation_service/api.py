"""The reputation servicers: validate, call the use case or the store, convert."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

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
from reputation_service import confirming, domain, rating, relay, store, sweeper
from reputation_service.config import Config
from reputation_service.marks import DeliveryMarks
from reputation_service.sessions_client import STATUSES, SessionsClient

DOMAIN = "interview.reputation"
# The inverse of the session client's map: a stored status back to the sessions package enum.
STATUS_NUMBERS = {name: number for number, name in STATUSES.items()}
# The last event's sequence number.
EVENTS_CURSOR = Cursor(Cursor.SEQUENCE)
# The last rating's sequence number.
RATINGS_CURSOR = Cursor(Cursor.SEQUENCE)
# The page's period (days since 1970-01-01), and its last entry: rank, score, user_id.
LEADERBOARD_CURSOR = Cursor(Cursor.NUMBER, Cursor.SEQUENCE, Cursor.SEQUENCE, Cursor.UUID)
PERIODS = {
    pb.LEADERBOARD_PERIOD_WEEK: domain.WEEK,
    pb.LEADERBOARD_PERIOD_MONTH: domain.MONTH,
    pb.LEADERBOARD_PERIOD_ALL_TIME: domain.ALL_TIME,
}
EPOCH = date(1970, 1, 1)


def confirmation_pb(view: confirming.View) -> pb.Confirmation:
    state = view.state
    reply = pb.Confirmation(
        session_id=view.session_id,
        session_status=STATUS_NUMBERS[view.status],
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


def rating_pb(row: Record) -> pb.PartnerRating:
    return pb.PartnerRating(
        session_id=str(row["session_id"]),
        rater_user_id=str(row["rater_user_id"]),
        rated_user_id=str(row["rated_user_id"]),
        rating=row["rating"],
        comment=row["comment"],
        create_time=timestamp(row["create_time"]),
    )


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


def _session_call_timeout(context: aio.ServicerContext[Any, Any], configured: float) -> float:
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
        marks: DeliveryMarks,
        tokens: PageTokens,
        rules: confirming.Rules,
        timeout: float,
    ) -> None:
        self._db = db
        self._sessions = sessions
        self._marks = marks
        self._tokens = tokens
        self._rules = rules
        self._timeout = timeout

    async def ConfirmCompletion(
        self,
        request: pb.ConfirmCompletionRequest,
        context: aio.ServicerContext[pb.ConfirmCompletionRequest, pb.Confirmation],
    ) -> pb.Confirmation:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        request_id = fields.optional_uuid("request_id", request.request_id)
        fields.done()
        view = await confirming.confirm_completion(
            self._db,
            self._sessions,
            self._marks,
            self._rules,
            caller,
            session_id,
            request_id,
            _session_call_timeout(context, self._timeout),
        )
        return confirmation_pb(view)

    async def GetConfirmation(
        self,
        request: pb.GetConfirmationRequest,
        context: aio.ServicerContext[pb.GetConfirmationRequest, pb.Confirmation],
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
        self,
        request: pb.GetReputationRequest,
        context: aio.ServicerContext[pb.GetReputationRequest, pb.Reputation],
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
            rating_count=row["rating_count"],
            average_rating=domain.average_rating(row["rating_count"], row["rating_sum"]),
        )

    async def ListReputationEvents(
        self,
        request: pb.ListReputationEventsRequest,
        context: aio.ServicerContext[pb.ListReputationEventsRequest, pb.ListReputationEventsResponse],
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

    async def RatePartner(
        self,
        request: pb.RatePartnerRequest,
        context: aio.ServicerContext[pb.RatePartnerRequest, pb.PartnerRating],
    ) -> pb.PartnerRating:
        caller = current_user_id()
        fields = Fields()
        session_id = fields.uuid("session_id", request.session_id)
        request_id = fields.optional_uuid("request_id", request.request_id)
        for name, problem in (
            ("rating", domain.rating_problem(request.rating)),
            ("comment", domain.comment_problem(request.comment)),
        ):
            if problem:
                fields.add(name, problem)
        fields.done()
        row = await rating.rate_partner(
            self._db,
            self._sessions,
            caller,
            session_id,
            request.rating,
            request.comment,
            request_id,
            _session_call_timeout(context, self._timeout),
        )
        return rating_pb(row)

    async def ListPartnerRatings(
        self,
        request: pb.ListPartnerRatingsRequest,
        context: aio.ServicerContext[pb.ListPartnerRatingsRequest, pb.ListPartnerRatingsResponse],
    ) -> pb.ListPartnerRatingsResponse:
        caller = current_user_id()
        fields = Fields()
        limit = fields.page_size(request.page_size)
        scope = f"ratings:{caller}"
        cursor = fields.page_token(self._tokens, scope, request.page_token, RATINGS_CURSOR)
        fields.done()
        async with connection(self._db) as conn:
            rows = await store.received_ratings(conn, caller, cursor[0] if cursor else None, limit + 1)
        token = self._tokens.next_token(scope, rows, limit, lambda last: [last["seq"]])
        return pb.ListPartnerRatingsResponse(
            ratings=[rating_pb(row) for row in rows[:limit]], next_page_token=token
        )

    async def ListLeaderboard(
        self,
        request: pb.ListLeaderboardRequest,
        context: aio.ServicerContext[pb.ListLeaderboardRequest, pb.ListLeaderboardResponse],
    ) -> pb.ListLeaderboardResponse:
        caller = current_user_id()
        fields = Fields()
        kind = fields.enum("period", request.period, PERIODS, pb.LeaderboardPeriod)
        limit = fields.page_size(request.page_size)
        scope = f"leaderboard:{caller}:{kind}"
        cursor = fields.page_token(self._tokens, scope, request.page_token, LEADERBOARD_CURSOR)
        fields.done()
        # A token keeps paging the period its first page showed, across the period's end.
        period = EPOCH + timedelta(days=cursor[0]) if cursor else None
        after = (cursor[2], cursor[3]) if cursor else None
        first_rank = cursor[1] + 1 if cursor else 1
        async with connection(self._db) as conn:
            start, rows = await store.leaderboard(conn, kind, period, after, limit + 1)
        entries = [
            pb.LeaderboardEntry(rank=first_rank + index, user_id=row["user_id"], score=row["score"])
            for index, row in enumerate(rows)
        ]
        days = (start - EPOCH).days
        token = self._tokens.next_token(
            scope, entries, limit, lambda last: [days, last.rank, last.score, last.user_id]
        )
        return pb.ListLeaderboardResponse(
            entries=entries[:limit],
            next_page_token=token,
            period_start=None if kind == domain.ALL_TIME else timestamp(datetime.combine(start, time(), UTC)),
        )


class ModerationApi(pb_grpc.ReputationInternalServiceServicer):
    """ReputationInternalService: moderators (service tokens with role reputation.moderate)."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db

    async def ReverseSessionAwards(
        self,
        request: pb.ReverseSessionAwardsRequest,
        context: aio.ServicerContext[pb.ReverseSessionAwardsRequest, pb.ReverseSessionAwardsResponse],
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
    marks = DeliveryMarks(lambda: connection(engine))
    outbox_relay = relay.Relay(
        engine,
        sessions,
        marks,
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
                    marks,
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
    app.on_start.extend([marks.start, outbox_relay.start, window_sweeper.start])
    # In-flight calls finish first (server.stop), then the relay finishes its current batch, then
    # the marks of every delivery made are written.
    app.on_stop.extend([outbox_relay.stop, window_sweeper.stop, marks.stop, sessions.close, engine.dispose])
    return app
