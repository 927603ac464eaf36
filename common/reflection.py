"""Server reflection with the proto comments, so `grpcurl describe` shows the contract's documentation,
on both protocols tools speak: grpc.reflection.v1 and the older v1alpha.

grpcio-reflection answers from a descriptor pool, and protobuf's pool (upb) keeps no source info
whatever it is built from; the generated modules carry none either. So the library's servicer
answers as usual and each file it sends is swapped for its twin in the FileDescriptorSet that
`make gen` writes with the comments (`interview/descriptors.binpb`), as protoc wrote it: `json_name`
included, so every tool prints the canonical proto3 JSON names (`sessionId`). Files outside that set
(health, reflection itself) go out as the library built them.

grpcio-reflection ships only v1alpha. v1 is the same messages under another package, so the one
servicer answers both paths, and v1's file is v1alpha's with the package renamed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from importlib import resources

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

DESCRIPTOR_SET = "descriptors.binpb"  # beside the generated modules, in the `interview` package


V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def documented_files() -> dict[str, bytes]:
    """Each file of the descriptor set by name, serialized with its comments."""
    files = descriptor_pb2.FileDescriptorSet.FromString(
        resources.files("interview").joinpath(DESCRIPTOR_SET).read_bytes()
    ).file
    return {file.name: file.SerializeToString() for file in files}


def _add_v1_descriptor() -> None:
    """grpc.reflection.v1 into the default pool (once): v1alpha's file, renamed, so that v1's
    service and messages are found by name like any other."""
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    file = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(file)
    old, new = f".{file.package}.", f".{V1_SERVICE.rsplit('.', 1)[0]}."
    file.name, file.package = _V1_FILE, new.strip(".")
    for message in file.message_type:
        for field in message.field:
            if field.type_name:
                field.type_name = field.type_name.replace(old, new)
    for service in file.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(file.SerializeToString())


async def _once(
    request: reflection_pb2.ServerReflectionRequest,
) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    yield request


class DocumentedReflection(reflection_pb2_grpc.ServerReflectionServicer):
    """grpcio-reflection's answers, with every file it sends replaced by its documented twin."""

    def __init__(self, service_names: Iterable[str], documented: Mapping[str, bytes]) -> None:
        self._reflection = reflection.aio.ReflectionServicer(service_names)
        self._documented = documented

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterator[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[
            reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
        ],
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
    """Serves reflection (grpc.reflection.v1 and v1alpha) for `service_names` and itself on
    `server`, comments included."""
    _add_v1_descriptor()
    servicer = DocumentedReflection([*service_names, reflection.SERVICE_NAME, V1_SERVICE], documented_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, {"ServerReflectionInfo": v1}),)
    )
