"""What the protos promise, checked against the running servers and the suite itself."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from interview.errors.v1 import errors_pb2
from interview.reputation.v1 import reputation_pb2
from interview.sessions.v1 import sessions_pb2

from tests.helpers import EMITTED_REASONS, new_id, service_metadata, user_metadata

ROOT = Path(__file__).resolve().parents[2]
PROTOS = {
    "interview.sessions.v1": (sessions_pb2, ROOT / "protos/interview/sessions/v1/sessions.proto"),
    "interview.reputation.v1": (reputation_pb2, ROOT / "protos/interview/reputation/v1/reputation.proto"),
}
PREFIX = "ERROR_REASON_"
DESCRIPTORS = ROOT / "gen/interview/descriptors.binpb"
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


def _listed(package: str) -> dict[str, tuple[set[str], set[str]]]:
    """Per RPC path, the reasons the contract lists: (the method's own, its service's common)."""
    return {
        f"/{service}/{name}": (
            set(method.GetOptions().Extensions[errors_pb2.reasons]),
            set(method.containing_service.GetOptions().Extensions[errors_pb2.common_reasons]),
        )
        for service, name, method in _methods(package)
    }


LISTED = {path: reasons for package in PROTOS for path, reasons in _listed(package).items()}


def _package(path: str) -> str:
    return path.split("/")[1].rsplit(".", 1)[0]


def reason_gaps(emitted: set[tuple[str, str]]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(listed but never emitted, emitted but not listed). A method's own reasons must each be
    emitted by that method; a common reason (one interceptor, one error mapping for the whole
    server) by some method of its package."""
    unlisted = {
        (path, reason)
        for path, reason in emitted
        if reason not in set().union(*LISTED.get(path, (set(), set())))
    }
    missing = {(path, reason) for path, (own, _) in LISTED.items() for reason in own} - emitted
    emitted_per_package = {(_package(path), reason) for path, reason in emitted}
    missing |= {
        (_package(path), reason) for path, (_, common) in LISTED.items() for reason in common
    } - emitted_per_package
    return missing, unlisted


@pytest.mark.parametrize("package", list(PROTOS))
def test_every_listed_reason_is_a_value_of_its_packages_enum_and_every_value_is_listed(package):
    module, _ = PROTOS[package]
    listed = set().union(*(own | common for own, common in _listed(package).values()))
    assert listed == _declared_reasons(module)


def _method_comments() -> dict[str, str]:
    """Each RPC's leading comment, from the descriptor set `make gen` writes with source info."""
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    comments = {}
    for file in files.file:
        for location in file.source_code_info.location:
            # FileDescriptorProto.service = 6, ServiceDescriptorProto.method = 2.
            if len(location.path) == 4 and location.path[0] == 6 and location.path[2] == 2:
                service = file.service[location.path[1]]
                method = service.method[location.path[3]]
                comments[f"/{file.package}.{service.name}/{method.name}"] = location.leading_comments
    return comments


def test_each_rpcs_comment_names_exactly_its_listed_reasons():
    comments = _method_comments()
    for package, (module, _) in PROTOS.items():
        for path, (own, _) in _listed(package).items():
            prose = comments[path].split("Reasons:", 1)[1]
            named = set(re.findall(r"[A-Z][A-Z_]+", prose)) & _declared_reasons(module)
            assert named == own, path


def test_reason_gaps_name_both_directions():
    get = "/interview.sessions.v1.SessionService/GetSession"
    missing, unlisted = reason_gaps({(get, "SESSION_NOT_FOUND"), (get, "NO_OPEN_QUESTION")})
    assert (get, "INVALID_ARGUMENT") in missing and (get, "SESSION_NOT_FOUND") not in missing
    assert ("interview.sessions.v1", "OVERLOADED") in missing
    assert unlisted == {(get, "NO_OPEN_QUESTION")}


def test_a_common_reason_counts_for_its_package_from_any_method():
    paths = [path for path in LISTED if _package(path) == "interview.reputation.v1"]
    missing, _ = reason_gaps({(paths[-1], "OVERLOADED")})
    assert ("interview.reputation.v1", "OVERLOADED") not in missing


@pytest.mark.after_all
def test_each_rpc_emits_only_its_listed_reasons_and_the_suite_emits_every_one(whole_suite):
    missing, unlisted = reason_gaps(EMITTED_REASONS.seen)
    assert unlisted == set(), "reasons emitted that the RPC's reasons options do not list"
    if whole_suite:
        assert missing == set(), "listed reasons no test made a server emit"
