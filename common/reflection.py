"""Server reflection with the proto comments, so `grpcurl describe` shows the contract's documentation.

grpcio-reflection answers from a descriptor pool, and protobuf's pool (upb) keeps no source info
whatever it is built from; the generated modules carry none either. So the library's servicer
answers as usual and each file it sends is swapped for its twin in the FileDescriptorSet that
`make gen` writes with the comments (`interview/descriptors.binpb`). Files outside that set
(health, reflection itself) go out as the library built them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

DESCRIPTOR_SET = "descriptors.binpb"  # beside the generated modules, in the `interview` package


def documented_files() -> dict[str, bytes]:
    """Each file of the descriptor set by name, serialized with its comments.

    protoc writes every field's `json_name` into a descriptor set, which the generated modules
    (and so what reflection served before) leave out; with it grpcurl would print camelCase JSON
    (`sessionId`) instead of the proto names callers script against (`session_id`)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("interview").joinpath(DESCRIPTOR_SET).read_bytes()
    ).file
    for file in files:
        _drop_json_names(file.message_type)
    return {file.name: file.SerializeToString() for file in files}


def _drop_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _drop_json_names(message.nested_type)


async def _once(request: reflection_pb2.ServerReflectionRequest) -> AsyncIterator[Any]:
    yield request


class DocumentedReflection(reflection_pb2_grpc.ServerReflectionServicer):
    """grpcio-reflection's answers, with every file it sends replaced by its documented twin."""

    def __init__(self, service_names: Iterable[str], documented: Mapping[str, bytes]) -> None:
        self._reflection = reflection.aio.ReflectionServicer(service_names)
        self._documented = documented

    async def ServerReflectionInfo(
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for request in request_iterator:
            # One request at a time: the library answers each with exactly one response.
            async for response in self._reflection.ServerReflectionInfo(_once(_by_service(request)), context):
                response.original_request.CopyFrom(request)
                files = response.file_descriptor_response.file_descriptor_proto
                for index, raw in enumerate(files):
                    name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                    files[index] = self._documented.get(name, raw)
                yield response


def _by_service(request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionRequest:
    """The request with a method's name (`pkg.Service.Method`, what `grpcurl describe` sends for a
    method) replaced by its service's: the upb pool finds no file by a method name
    (grpc/grpc#34743), and the file is the service's."""
    if not request.HasField("file_containing_symbol"):
        return request
    try:
        method = descriptor_pool.Default().FindMethodByName(request.file_containing_symbol)
    except KeyError:
        return request
    return reflection_pb2.ServerReflectionRequest(
        host=request.host, file_containing_symbol=method.containing_service.full_name
    )


def enable_documented_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serves reflection (grpc.reflection.v1alpha) for `service_names` on `server`, comments included."""
    servicer = DocumentedReflection(service_names, documented_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
