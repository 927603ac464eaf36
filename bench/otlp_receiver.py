"""A local OTLP receiver for the tracing rows, in its own process:

python -m bench.otlp_receiver PORT   serves opentelemetry.proto.collector.trace.v1.TraceService/Export
                                     on 127.0.0.1:PORT (plaintext), counts the spans it is sent by
                                     their resource's service.name and drops them; COUNT_METHOD
                                     answers the counts so far as a JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from bench.procs import serve_until_signal

COUNT_METHOD = "/bench.Spans/Count"


def service_name(resource: Resource) -> str:
    return next((a.value.string_value for a in resource.attributes if a.key == "service.name"), "")


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: Counter[str] = Counter()
        # Every distinct resource that sent spans, as its string attributes.
        self.resources: list[dict[str, str]] = []

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[
            trace_service_pb2.ExportTraceServiceRequest, trace_service_pb2.ExportTraceServiceResponse
        ],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            spans = sum(len(scope_spans.spans) for scope_spans in resource_spans.scope_spans)
            self.spans[service_name(resource_spans.resource)] += spans
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            if attributes not in self.resources:
                self.resources.append(attributes)
        return trace_service_pb2.ExportTraceServiceResponse()


def count_handler(receiver: Receiver) -> grpc.GenericRpcHandler:
    """COUNT_METHOD: bytes in (ignored), the counts out, no protobuf either way."""

    async def count(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return json.dumps(receiver.spans).encode()

    service, method = COUNT_METHOD.strip("/").split("/")
    return grpc.method_handlers_generic_handler(service, {method: grpc.unary_unary_rpc_method_handler(count)})


async def serve(port: int) -> None:
    server = grpc.aio.server()
    receiver = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    server.add_generic_rpc_handlers((count_handler(receiver),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await serve_until_signal(server)


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
