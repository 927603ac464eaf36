"""What the protos promise, checked against the running servers and the suite itself."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from interview.reputation.v1 import reputation_pb2
from interview.sessions.v1 import sessions_pb2

from tests.conftest import EMITTED_REASONS
from tests.helpers import new_id, service_metadata, user_metadata

ROOT = Path(__file__).resolve().parents[2]
PROTOS = {
    "interview.sessions.v1": (sessions_pb2, ROOT / "protos/interview/sessions/v1/sessions.proto"),
    "interview.reputation.v1": (reputation_pb2, ROOT / "protos/interview/reputation/v1/reputation.proto"),
}
PREFIX = "ERROR_REASON_"
HEALTH_AND_REFLECTION = {
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}


def _declared_reasons(module) -> set[str]:
    """The wire reasons an ErrorReason enum declares: value names without the prefix."""
    names = module.ErrorReason.keys()
    return {name.removeprefix(PREFIX) for name in names if name != f"{PREFIX}UNSPECIFIED"}


def _methods(package: str) -> list[tuple[str, str, object]]:
    module, _ = PROTOS[package]
    return [
        (service.full_name, method.name, method)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    ]


ALL_METHODS = [m for package in PROTOS for m in _methods(package)]


@pytest.mark.parametrize(
    ("service", "method", "descriptor"), ALL_METHODS, ids=[f"{s}/{m}" for s, m, _ in ALL_METHODS]
)
async def test_every_declared_rpc_is_implemented(
    service, method, descriptor, session_server, reputation_server, jwt_settings, service_keys
):
    port = reputation_server.port if service.startswith("interview.reputation") else session_server.port
    metadata = (
        service_metadata(service_keys)
        if service.endswith("InternalService")
        else user_metadata(jwt_settings, new_id())
    )
    request_type = descriptor.input_type._concrete_class
    response_type = descriptor.output_type._concrete_class
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        try:
            await call(request_type(), metadata=metadata, timeout=10)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
    assert code != grpc.StatusCode.UNIMPLEMENTED


async def test_a_method_the_servers_lack_would_fail_that_check(session_server, jwt_settings):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{session_server.port}") as channel:
        call = channel.unary_unary("/interview.sessions.v1.SessionService/DeleteSession")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(b"", metadata=user_metadata(jwt_settings, new_id()), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


# Both reflection protocols, answered by one servicer: v1 is v1alpha's messages under another name.
REFLECTION_PATHS = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]


async def _reflect(port: int, path: str, request: reflection_pb2.ServerReflectionRequest):
    """The one answer to `request` over the reflection protocol at `path`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        async for reply in call(iter([request]), timeout=10):
            return reply
    raise AssertionError(f"no answer at {path}")


async def _reflected_services(port: int, path: str = REFLECTION_PATHS[0]) -> set[str]:
    reply = await _reflect(port, path, reflection_pb2.ServerReflectionRequest(list_services=""))
    return {service.name for service in reply.list_services_response.service}


@pytest.mark.parametrize("path", REFLECTION_PATHS)
async def test_reflection_lists_exactly_the_declared_services_plus_health_and_reflection(
    session_server, reputation_server, path
):
    for port, package in (
        (session_server.port, "interview.sessions.v1"),
        (reputation_server.port, "interview.reputation.v1"),
    ):
        declared = {service for service, _, _ in _methods(package)}
        assert await _reflected_services(port, path) == declared | HEALTH_AND_REFLECTION


async def test_the_reflection_check_tells_one_server_from_the_other(session_server, reputation_server):
    sessions_declared = {service for service, _, _ in _methods("interview.sessions.v1")}
    assert await _reflected_services(reputation_server.port) != sessions_declared | HEALTH_AND_REFLECTION


@pytest.mark.parametrize("path", REFLECTION_PATHS)
async def test_reflection_serves_the_contracts_descriptors_as_they_are(session_server, path):
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="interview.sessions.v1.SessionService"
    )
    reply = await _reflect(session_server.port, path, request)
    files = {
        file.name: file
        for file in map(
            descriptor_pb2.FileDescriptorProto.FromString,
            reply.file_descriptor_response.file_descriptor_proto,
        )
    }
    served = files["interview/sessions/v1/sessions.proto"]
    # json_name included (canonical JSON in every tool), and the comments.
    (session,) = [message for message in served.message_type if message.name == "Session"]
    assert {f.name: f.json_name for f in session.field}["session_id"] == "sessionId"
    assert served.source_code_info.location
    assert served.options.go_package


@pytest.mark.parametrize("path", REFLECTION_PATHS)
async def test_each_reflection_protocol_describes_itself(session_server, path):
    service = path.split("/")[1]
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    reply = await _reflect(session_server.port, path, request)
    (raw,) = reply.file_descriptor_response.file_descriptor_proto
    file = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert f"{file.package}.{file.service[0].name}" == service
    assert {m.name for m in file.message_type} >= {"ServerReflectionRequest", "ServerReflectionResponse"}


def undocumented_values(proto_text: str, enum: str) -> list[str]:
    """Enum values in `enum` whose line is not directly preceded by a // comment."""
    body = re.search(rf"enum {enum} \{{(.*?)\n\}}", proto_text, re.S)
    assert body is not None, f"no enum {enum}"
    lines = body.group(1).splitlines()
    return [
        line.split("=")[0].strip()
        for index, line in enumerate(lines)
        if "=" in line and not lines[index - 1].strip().startswith("//")
    ]


@pytest.mark.parametrize("package", list(PROTOS))
def test_every_error_reason_is_documented(package):
    _, path = PROTOS[package]
    assert undocumented_values(path.read_text(), "ErrorReason") == []


def test_an_undocumented_value_is_reported():
    text = "enum ErrorReason {\n  // fine\n  ERROR_REASON_A = 1;\n  ERROR_REASON_B = 2;\n}"
    assert undocumented_values(text, "ErrorReason") == ["ERROR_REASON_B"]


def reason_gaps(emitted: set[tuple[str, str]]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(declared but never emitted, emitted but not declared), per package."""
    declared = {
        (package, reason) for package, (module, _) in PROTOS.items() for reason in _declared_reasons(module)
    }
    return declared - emitted, emitted - declared


def test_reason_gaps_name_both_directions():
    missing, unknown = reason_gaps(
        {("interview.sessions.v1", "SESSION_NOT_FOUND"), ("interview.sessions.v1", "OOPS")}
    )
    assert ("interview.sessions.v1", "NO_OPEN_QUESTION") in missing
    assert unknown == {("interview.sessions.v1", "OOPS")}


@pytest.mark.after_all
def test_the_suite_emits_every_declared_reason_and_no_other(whole_suite):
    missing, unknown = reason_gaps(EMITTED_REASONS.seen)
    assert unknown == set(), "reasons emitted that the ErrorReason enums lack"
    if whole_suite:
        assert missing == set(), "ErrorReason values no test made a server emit"
