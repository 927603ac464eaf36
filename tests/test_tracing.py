"""OpenTelemetry through real servers: one trace per confirmation across both services and the
database, a relay delivery linked to the confirmation that queued it, rich errors unchanged by the
instrumentation, the trace id in the call log and as the INTERNAL correlation id, and a service
process that exports over OTLP only when an endpoint is set.

The module installs the instrumentation with an in-memory exporter (the real SDK) for its own
servers, started inside it; leaving the module removes it, so the rest of the suite runs untraced."""

from __future__ import annotations

import json
import logging
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from importlib import metadata

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from bench.otlp_receiver import Receiver
from common import tracing
from common.config import ConfigError
from session_service import api as session_api
from tests.helpers import (
    complete,
    confirm,
    create,
    expect_error,
    get,
    new_id,
    paired,
    pause,
    rate,
    same_trace,
    service_metadata,
    spans_named,
    the_one_call_line,
    the_span,
    user_metadata,
    wait_for,
)
from tests.servers import (
    ServiceProcess,
    Stack,
    new_database,
    own_database,
    own_stack,
    reputation_config_for,
    running_reputation,
    session_config_for,
    start_session_server,
)

CONFIRM = "/interview.reputation.v1.ReputationService/ConfirmCompletion"
LOOKUP = "/interview.sessions.v1.SessionInternalService/LookupSession"
COMPLETE = "/interview.sessions.v1.SessionInternalService/CompletePairedSession"
GET_SESSION = "/interview.sessions.v1.SessionService/GetSession"
GET_REPUTATION = "/interview.reputation.v1.ReputationService/GetReputation"
DELIVER = "outbox.deliver"
SESSIONS_DOMAIN, REPUTATION_DOMAIN = "interview.sessions", "interview.reputation"


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span of the servers started while the module runs, as the SDK finishes it."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.installed(provider):
        yield exporter


@pytest.fixture
async def stack(spans: InMemorySpanExporter, postgres_url: str, keys) -> AsyncIterator[Stack]:
    """A traced session service on a database of the test's own (no other relay reaches its rows)."""
    async with own_database(postgres_url, "tracing") as database, own_stack(*database, keys) as ready:
        yield ready


def one(spans: list[ReadableSpan], name: str, kind: SpanKind) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name and s.kind == kind]
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def statements_under(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The database spans whose parent is `parent`."""
    return [
        s
        for s in spans
        if s.kind == SpanKind.CLIENT
        and s.attributes is not None
        and s.attributes.get("db.system") == "postgresql"
        and parent_id(s) == span_id(parent)
    ]


@pytest.mark.parametrize(
    ("environ", "traced"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "reputation_service"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),
    ],
)
def test_traces_are_exported_only_when_an_otlp_endpoint_or_exporter_is_set(environ, traced):
    assert tracing.wanted(environ) is traced


def test_an_exporter_we_do_not_ship_is_a_configuration_error():
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        tracing.wanted({"OTEL_TRACES_EXPORTER": "zipkin"})


async def test_a_paired_confirmation_is_one_trace_across_both_services_and_the_database(
    spans, stack, keys, as_user, caplog
):
    caplog.set_level(logging.INFO, logger="rpc")
    config = reputation_config_for(stack.url, keys, stack.session_target)
    async with running_reputation(config) as (_, reputation):
        session_id, owner, partner = await paired(stack.sessions, as_user)

        # The first confirmation asks the session service who takes part.
        spans.clear()
        await confirm(reputation, as_user(owner), session_id)
        first = await the_span(spans, CONFIRM, SpanKind.SERVER)
        await the_span(spans, LOOKUP, SpanKind.SERVER)
        lookup_client = one(same_trace(spans, first), LOOKUP, SpanKind.CLIENT)
        lookup_server = one(same_trace(spans, first), LOOKUP, SpanKind.SERVER)
        assert parent_id(lookup_client) == span_id(first)
        assert parent_id(lookup_server) == span_id(lookup_client)

        # The second decides the award and completes the session inline.
        spans.clear()
        caplog.clear()
        reply = await confirm(reputation, as_user(partner), session_id)
        assert reply.reputation_awarded and not reply.completion_pending
        server = await the_span(spans, CONFIRM, SpanKind.SERVER)
        await the_span(spans, COMPLETE, SpanKind.SERVER)
        trace = same_trace(spans, server)

    delivery = one(trace, DELIVER, SpanKind.INTERNAL)
    complete_client = one(trace, COMPLETE, SpanKind.CLIENT)
    complete_server = one(trace, COMPLETE, SpanKind.SERVER)
    assert parent_id(delivery) == span_id(server)
    assert parent_id(complete_client) == span_id(delivery)
    assert parent_id(complete_server) == span_id(complete_client)
    assert not delivery.links, "delivered inline: already in the confirmation's trace"
    assert [s.name for s in trace if s.name == LOOKUP] == [], "a known session needs no lookup"
    # The confirmation's one statement and the session's update. The delivery's mark is written
    # after the reply, with other marks, untraced (marks.DeliveryMarks).
    assert len(statements_under(trace, server)) == 1
    assert statements_under(trace, complete_server)
    assert not statements_under(trace, delivery)

    trace_id = format_trace_id(server.context.trace_id)
    assert (await the_one_call_line(caplog, CONFIRM))["trace_id"] == trace_id
    assert (await the_one_call_line(caplog, COMPLETE))["trace_id"] == trace_id


async def _traceparent(db: asyncpg.Pool, session_id: str) -> str | None:
    return await db.fetchval("SELECT traceparent FROM reputation.outbox WHERE session_id = $1", session_id)


async def _delivered(db: asyncpg.Pool, session_id: str) -> bool:
    return await db.fetchval(
        "SELECT deliver_time IS NOT NULL FROM reputation.outbox WHERE session_id = $1", session_id
    )


async def test_a_delivery_after_an_outage_links_to_the_trace_of_the_confirmation_that_queued_it(
    spans, stack, keys, as_user
):
    config = reputation_config_for(stack.url, keys, stack.session_target)
    port = stack.session_app.port
    restarted = None
    async with running_reputation(config) as (_, reputation):
        session_id, owner, partner = await paired(stack.sessions, as_user)
        await confirm(reputation, as_user(owner), session_id)

        await stack.session_app.stop(grace=0)
        spans.clear()
        reply = await confirm(reputation, as_user(partner), session_id)
        assert reply.reputation_awarded and reply.completion_pending
        confirmation = await the_span(spans, CONFIRM, SpanKind.SERVER)
        assert confirmation.context is not None
        context = confirmation.context
        ids = f"{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}"
        assert await _traceparent(stack.db, session_id) == f"00-{ids}-{context.trace_flags:02x}"

        try:
            restarted = await start_session_server(stack.url, keys, f"127.0.0.1:{port}")
            await wait_for(lambda: _delivered(stack.db, session_id), within=20, what="the relay to deliver")
        finally:
            if restarted is not None:
                await restarted.stop(grace=1)

    relayed = [
        s
        for s in spans_named(spans, DELIVER, SpanKind.INTERNAL)
        if s.attributes and s.attributes["interview.session_id"] == session_id and s.parent is None
    ]
    assert relayed, "the relay's attempts are traces of their own"
    for attempt in relayed:
        (link,) = attempt.links
        assert (link.context.trace_id, link.context.span_id) == (
            confirmation.context.trace_id,
            span_id(confirmation),
        )
    last = relayed[-1]
    completed = one(same_trace(spans, last), COMPLETE, SpanKind.SERVER)
    assert parent_id(one(same_trace(spans, last), COMPLETE, SpanKind.CLIENT)) == span_id(last)
    assert completed.status.status_code != StatusCode.ERROR


async def test_rich_errors_keep_their_code_reason_and_details_through_the_instrumentation(
    spans, stack, keys, service_keys, as_user
):
    config = reputation_config_for(stack.url, keys, stack.session_target)
    async with (
        running_reputation(config) as (app, reputation),
        grpc.aio.insecure_channel(stack.session_target) as channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as reputation_channel,
    ):
        moderation = reputation_pb2_grpc.ReputationInternalServiceStub(reputation_channel)
        internal = sessions_pb2_grpc.SessionInternalServiceStub(channel)
        owner = new_id()
        solo = (await create(stack.sessions, as_user(owner))).session_id
        paused = (await create(stack.sessions, as_user(owner))).session_id
        await pause(stack.sessions, as_user(owner), paused)
        session_id, _, partner = await paired(stack.sessions, as_user, owner=owner)
        service = service_metadata(service_keys)
        done = (await paired(stack.sessions, as_user, owner=owner))[0]
        await internal.CompletePairedSession(
            pb.CompletePairedSessionRequest(session_id=done), metadata=service
        )
        # (the call, its server method, code, reason, domain, the BadRequest's fields). Each call is
        # made only when its turn comes, so its spans are told apart from the others'.
        cases = [
            (
                lambda: stack.sessions.GetSession(pb.GetSessionRequest(session_id=solo)),
                GET_SESSION,
                grpc.StatusCode.UNAUTHENTICATED,
                "UNAUTHENTICATED",
                SESSIONS_DOMAIN,
                set(),
            ),
            (
                lambda: stack.sessions.GetSession(
                    pb.GetSessionRequest(session_id="nope"), metadata=as_user(owner)
                ),
                GET_SESSION,
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_ARGUMENT",
                SESSIONS_DOMAIN,
                {"session_id"},
            ),
            (
                lambda: get(stack.sessions, as_user(owner), new_id()),
                GET_SESSION,
                grpc.StatusCode.NOT_FOUND,
                "SESSION_NOT_FOUND",
                SESSIONS_DOMAIN,
                set(),
            ),
            (
                lambda: pause(stack.sessions, as_user(owner), paused),
                "/interview.sessions.v1.SessionService/PauseSession",
                grpc.StatusCode.FAILED_PRECONDITION,
                "SESSION_NOT_ACTIVE",
                SESSIONS_DOMAIN,
                set(),
            ),
            (
                lambda: complete(stack.sessions, as_user(owner), session_id),
                "/interview.sessions.v1.SessionService/CompleteSession",
                grpc.StatusCode.FAILED_PRECONDITION,
                "MUTUAL_CONFIRMATION_REQUIRED",
                SESSIONS_DOMAIN,
                set(),
            ),
            (
                lambda: internal.LookupSession(
                    pb.LookupSessionRequest(session_id=solo), metadata=as_user(owner)
                ),
                LOOKUP,
                grpc.StatusCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                SESSIONS_DOMAIN,
                set(),
            ),
            (
                lambda: internal.CompletePairedSession(
                    pb.CompletePairedSessionRequest(session_id=solo), metadata=service
                ),
                COMPLETE,
                grpc.StatusCode.FAILED_PRECONDITION,
                "NOT_A_PAIRED_SESSION",
                SESSIONS_DOMAIN,
                set(),
            ),
            # Through the reputation service, which asks the session service over a traced channel.
            (
                lambda: confirm(reputation, as_user(owner), new_id()),
                CONFIRM,
                grpc.StatusCode.NOT_FOUND,
                "SESSION_NOT_FOUND",
                REPUTATION_DOMAIN,
                set(),
            ),
            (
                lambda: confirm(reputation, as_user(owner), solo),
                CONFIRM,
                grpc.StatusCode.FAILED_PRECONDITION,
                "NOT_A_PAIRED_SESSION",
                REPUTATION_DOMAIN,
                set(),
            ),
            (
                lambda: confirm(reputation, as_user(owner), done),
                CONFIRM,
                grpc.StatusCode.FAILED_PRECONDITION,
                "SESSION_ALREADY_COMPLETED",
                REPUTATION_DOMAIN,
                set(),
            ),
            (
                lambda: moderation.ReverseSessionAwards(
                    rpb.ReverseSessionAwardsRequest(session_id=session_id), metadata=as_user(owner)
                ),
                "/interview.reputation.v1.ReputationInternalService/ReverseSessionAwards",
                grpc.StatusCode.PERMISSION_DENIED,
                "PERMISSION_DENIED",
                REPUTATION_DOMAIN,
                set(),
            ),
            (
                lambda: rate(reputation, as_user(partner), session_id, 5),
                "/interview.reputation.v1.ReputationService/RatePartner",
                grpc.StatusCode.FAILED_PRECONDITION,
                "NOT_CONFIRMED_YET",
                REPUTATION_DOMAIN,
                set(),
            ),
            (
                lambda: confirm(reputation, as_user(owner), ""),
                CONFIRM,
                grpc.StatusCode.INVALID_ARGUMENT,
                "INVALID_ARGUMENT",
                REPUTATION_DOMAIN,
                {"session_id"},
            ),
        ]
        for call, method, code, reason, domain, fields in cases:
            spans.clear()
            error = await expect_error(call(), code, reason)
            assert (error.domain, set(error.fields)) == (domain, fields), error
            # The server span tells the code the caller got.
            server = await the_span(spans, method, SpanKind.SERVER)
            assert server.attributes is not None
            assert server.attributes["rpc.grpc.status_code"] == code.value[0], (method, reason)


async def test_health_watch_and_reflection_streams_answer_through_the_instrumentation(spans, stack):
    async with grpc.aio.insecure_channel(stack.session_target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=5)
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in reflection.ServerReflectionInfo(iter([request]), timeout=5):
            services = {service.name for service in reply.list_services_response.service}
            break
    assert "interview.sessions.v1.SessionService" in services


async def test_an_internal_error_is_correlated_by_its_trace_id_in_the_reply_and_the_log(
    spans, postgres_url, keys, jwt_settings, caplog
):
    caplog.set_level(logging.INFO, logger="rpc")
    unmigrated = await new_database(postgres_url, "empty")  # every query fails the way a bug would
    app = session_api.create_server(session_config_for(unmigrated, keys, pool_size=2))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            spans.clear()
            caplog.clear()
            call = sessions_pb2_grpc.SessionServiceStub(channel).GetSession(
                pb.GetSessionRequest(session_id=new_id()), metadata=user_metadata(jwt_settings, new_id())
            )
            error = await expect_error(call, grpc.StatusCode.INTERNAL, "INTERNAL")
            server = await the_span(spans, GET_SESSION, SpanKind.SERVER)
    finally:
        await app.stop(grace=1)

    trace_id = format_trace_id(server.context.trace_id)
    assert error.metadata == {"correlation_id": trace_id}
    line = await the_one_call_line(caplog, GET_SESSION)
    assert line["trace_id"] == line["correlation_id"] == trace_id
    assert any(r.exc_info and trace_id in r.getMessage() for r in caplog.records), (
        "the bug is logged under it"
    )
    assert server.status.status_code == StatusCode.ERROR
    assert server.attributes is not None
    assert server.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]


async def _one_call_as_a_process(
    endpoint: str, keys, jwt_settings, package: str = "session_service", **otel: str
) -> dict:
    """`python -m <package>` with OTEL_EXPORTER_OTLP_ENDPOINT=`endpoint` (and the `otel` variables)
    answers one call (its database is unreachable), then stops on SIGTERM; returns that call's log
    line."""
    prefix = "SESSION" if package == "session_service" else "REPUTATION"
    env = {
        **keys.env(),
        f"{prefix}_LISTEN": "127.0.0.1:0",
        f"{prefix}_METRICS_LISTEN": "127.0.0.1:0",
        f"{prefix}_DATABASE_URL": "postgresql://postgres@/postgres?host=/nonexistent-socket-dir",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        **otel,
    }
    service = await ServiceProcess(package, env).start()
    metadata = user_metadata(jwt_settings, new_id())
    try:
        async with grpc.aio.insecure_channel(service.target) as channel:
            if package == "session_service":
                method = GET_SESSION
                call = sessions_pb2_grpc.SessionServiceStub(channel).GetSession(
                    pb.GetSessionRequest(session_id=new_id()), metadata=metadata
                )
            else:
                method = GET_REPUTATION
                call = reputation_pb2_grpc.ReputationServiceStub(channel).GetReputation(
                    rpb.GetReputationRequest(), metadata=metadata
                )
            await expect_error(call, grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE")
    finally:
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        assert await service.wait() == 0
    events = [json.loads(line) for line in service.log if line.startswith("{")]
    (line,) = [event for event in events if event.get("method") == method]
    return line


async def test_a_service_process_exports_over_otlp_only_when_an_endpoint_is_set(keys, jwt_settings):
    collector = Receiver()  # the bench's OTLP receiver: counts spans by service.name
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        untraced = await _one_call_as_a_process("", keys, jwt_settings)
        assert "trace_id" not in untraced
        assert collector.spans == Counter()

        traced = await _one_call_as_a_process(f"http://127.0.0.1:{port}", keys, jwt_settings)
        assert len(traced["trace_id"]) == 32
        # Stopping flushed what the batch processor still held.
        assert collector.spans["session-service"] > 0
    finally:
        await server.stop(None)


async def test_each_service_names_itself_with_its_version_and_an_id_per_process_unless_told_otherwise(
    keys, jwt_settings
):
    collector = Receiver()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    endpoint = f"http://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    try:
        for package in ("session_service", "reputation_service", "session_service"):
            await _one_call_as_a_process(endpoint, keys, jwt_settings, package)
        await _one_call_as_a_process(endpoint, keys, jwt_settings, OTEL_SERVICE_NAME="sessions-eu")
        attributes = "service.name=from-attributes,team=interviews"
        await _one_call_as_a_process(endpoint, keys, jwt_settings, OTEL_RESOURCE_ATTRIBUTES=attributes)
    finally:
        await server.stop(None)
    names = [resource["service.name"] for resource in collector.resources]
    defaults = ["session-service", "reputation-service", "session-service"]
    assert names == [*defaults, "sessions-eu", "from-attributes"]
    version = metadata.version("interview-services")
    assert {resource["service.version"] for resource in collector.resources} == {version}
    instances = [resource["service.instance.id"] for resource in collector.resources]
    assert len(set(instances)) == len(instances) and all(uuid.UUID(instance) for instance in instances)
    assert collector.resources[-1]["team"] == "interviews"
