"""OpenTelemetry tracing, configured only by the standard OTEL_* variables: spans for the calls a
process serves, the calls it makes and its statements; the current trace's id and W3C context.

Off unless an OTLP endpoint (or OTEL_TRACES_EXPORTER=otlp) is set: then nothing is instrumented at
all, so an untraced process pays nothing but a look at the current span where a trace id is read."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from importlib import metadata

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
    OTELResourceDetector,
    Resource,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from common.config import ConfigError

# The outbox keeps a confirmation's context as a W3C traceparent, whatever OTEL_PROPAGATORS says.
_W3C = TraceContextTextMapPropagator()
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# The distribution whose version the spans carry as service.version.
DISTRIBUTION = "interview-services"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces: OTEL_TRACES_EXPORTER=otlp, or an OTLP endpoint
    set with OTEL_TRACES_EXPORTER unset; OTEL_TRACES_EXPORTER=none turns them off. The OTLP/gRPC
    exporter is the only one shipped, so any other exporter is a configuration error."""
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in ("", "otlp", "none"):
        raise ConfigError("OTEL_TRACES_EXPORTER", f"must be otlp or none, got {exporter!r}")
    return exporter == "otlp" or (exporter == "" and any(environ.get(name) for name in _ENDPOINTS))


def resource(service_name: str) -> Resource:
    """What this process's spans say they come from: `service_name` (session-service,
    reputation-service), the package's version and an id of its own (one per process, workers
    included), unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say otherwise: the operator's
    settings win."""
    defaults = {
        SERVICE_NAME: service_name,
        SERVICE_VERSION: metadata.version(DISTRIBUTION),
        SERVICE_INSTANCE_ID: str(uuid.uuid4()),
    }
    return Resource.create(defaults).merge(OTELResourceDetector().detect())


def otlp_provider(service_name: str) -> TracerProvider:
    """A provider exporting in batches over OTLP/gRPC, its spans under `resource(service_name)`. The
    SDK reads the rest from OTEL_*: endpoint, headers and TLS, sampler (OTEL_TRACES_SAMPLER), batch
    sizes."""
    provider = TracerProvider(resource=resource(service_name))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


@contextlib.contextmanager
def installed(provider: TracerProvider) -> Iterator[None]:
    """Within the block, `provider` records a span for every call a grpc.aio server serves, every
    call a grpc.aio channel makes (W3C context sent along) and every asyncpg statement; servers and
    channels created inside the block are the ones traced. On leaving, the instrumentation is
    removed and the provider flushes and shuts down.

    The provider becomes the process's global one (for spans of our own, such as the relay's);
    OpenTelemetry lets that happen once per process."""
    trace.set_tracer_provider(provider)
    instrumentors = (GrpcAioInstrumentorServer(), GrpcAioInstrumentorClient(), AsyncPGInstrumentor())
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        provider.shutdown()


def untraced() -> contextlib.AbstractContextManager[object]:
    """Statements and calls made inside record no span: for background polling (health probes,
    the relay's claims, the sweeper), which would otherwise start a trace every few moments."""
    return suppress_instrumentation()


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), or None outside any trace."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def traceparent() -> str | None:
    """The current span's W3C traceparent, or None outside any trace."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def links(traceparent: str | None) -> list[trace.Link]:
    """A link to the span a W3C `traceparent` names; none when there is none (or it is malformed)."""
    if not traceparent:
        return []
    context = trace.get_current_span(_W3C.extract({"traceparent": traceparent})).get_span_context()
    return [trace.Link(context)] if context.is_valid else []
