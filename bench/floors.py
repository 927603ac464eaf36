"""The yardstick servers, each its own process so its CPU time can be read from /proc:

python -m bench.floors echo PORT [TLS_PORT]    empty unary handler: bytes in, a reply of the size the
                                               method names
python -m bench.floors fused PORT [TLS_PORT]   the same JWT check and SQL as the services, no
                                               framework around them

With the OTEL_* variables that trace a service (common.tracing.wanted), a floor is traced by the
same instrumentation and exporter as the services: the tracing rows' floor, what OpenTelemetry
costs for a call's spans with nothing else around them.

With TLS_PORT, the same handlers are served there too over TLS (TLS_CERT_FILE, TLS_KEY_FILE, and
mutual TLS with TLS_CLIENT_CA_FILE), as the services serve it: one process, so the plaintext and
the TLS figures differ by the transport alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from typing import Any

import grpc
import jwt
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from bench import sqlpaths
from bench.procs import serve_until_signal
from bench.workloads import SCENARIOS
from common import tracing
from common.app import SERVER_OPTIONS
from common.auth.verify import LEEWAY_SECONDS
from common.config import jwt_settings, page_token_secret, positive_int, tls_settings
from common.tls import server_credentials
from reputation_service import domain as reputation_domain
from reputation_service.api import confirmation_pb
from reputation_service.confirming import View
from session_service.api import message_pb, session_pb
from session_service.store import micros

ECHO_SERVICE = "/bench.Echo/"


class Echo(grpc.GenericRpcHandler):
    """Answers "/bench.Echo/<n>" with n bytes, whatever it is sent."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[bytes, bytes] | None:
        method = handler_call_details.method
        if not method.startswith(ECHO_SERVICE):
            return None
        if method not in self._handlers:
            reply = b"\x01" * int(method[len(ECHO_SERVICE) :])

            async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
                return reply

            self._handlers[method] = grpc.unary_unary_rpc_method_handler(echo)
        return self._handlers[method]


def reply(pools: sqlpaths.Pools, scenario: str, caller: str, request: Any, result: Any) -> Any:
    """The same reply message the service builds from the same rows."""
    page = sqlpaths.PAGE
    if scenario == "ListSessions":
        token = ""
        if len(result) > page:
            last = result[page - 1]
            token = pools.tokens.encode(
                f"sessions:{caller}:None", [micros(last["create_time"]), str(last["session_id"])]
            )
        return pb.ListSessionsResponse(sessions=[session_pb(r) for r in result[:page]], next_page_token=token)
    if scenario == "ListMessages":
        scope = f"messages:{caller}:{request.session_id}"
        token = pools.tokens.encode(scope, [result[page - 1]["seq"]]) if len(result) > page else ""
        return pb.ListMessagesResponse(messages=[message_pb(r) for r in result[:page]], next_page_token=token)
    if scenario == "AppendMessage":
        return message_pb(result)
    if scenario == "ListLeaderboard":
        _, rows, before = result
        entries = [
            rpb.LeaderboardEntry(rank=before + 1 + i, user_id=row["user_id"], score=row["score"])
            for i, row in enumerate(rows[:page])
        ]
        token = ""
        if len(rows) > page:
            last = entries[-1]
            token = pools.tokens.encode(f"leaderboard:{caller}:all", [0, last.rank, last.score, last.user_id])
        return rpb.ListLeaderboardResponse(entries=entries, next_page_token=token)
    if scenario == "ConfirmCompletion":
        status = "completed" if result.delivered else result.session.status
        expires = reputation_domain.expire_time(
            result.first_confirm_time, sqlpaths.CONFIRMATION_WINDOW, result.decided
        )
        return confirmation_pb(View(result.session.session_id, result, status, expires))
    return session_pb(result)


def fused_handlers(pools: sqlpaths.Pools) -> list[grpc.GenericRpcHandler]:
    """One bare handler per scenario: check the token as TokenVerifier does, run the SQL, reply."""
    settings = jwt_settings(os.environ)
    key = jwt.get_algorithm_by_name(settings.algorithm).prepare_key(settings.key)

    def handler(scenario: str) -> grpc.RpcMethodHandler[Any, Any]:
        path = sqlpaths.PATHS[scenario]

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = str(dict(context.invocation_metadata() or ()).get("authorization", "")).partition(" ")[2]
            try:
                claims = jwt.decode(
                    token.strip(),
                    key,
                    algorithms=[settings.algorithm],
                    audience=settings.audience,
                    issuer=settings.issuer,
                    leeway=LEEWAY_SECONDS,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
                caller = str(uuid.UUID(claims["sub"]))
            except (jwt.InvalidTokenError, ValueError):
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
            try:
                result = await path(pools, caller, request)
            except sqlpaths.NotFound as error:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(error))
            except sqlpaths.Invalid as error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            return reply(pools, scenario, caller, request, result)

        spec = SCENARIOS[scenario]
        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=spec.request.FromString,
            response_serializer=spec.response.SerializeToString,
        )

    services: dict[str, dict[str, grpc.RpcMethodHandler[Any, Any]]] = {}
    for name, spec in SCENARIOS.items():
        service, method = spec.method.strip("/").split("/")
        services.setdefault(service, {})[method] = handler(name)
    return [grpc.method_handlers_generic_handler(service, methods) for service, methods in services.items()]


async def serve(kind: str, port: int, tls_port: int | None) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pools = None
    if kind == "echo":
        server.add_generic_rpc_handlers((Echo(),))
    else:
        size = positive_int(os.environ, "SESSION_DB_POOL_SIZE", 10)
        secret = page_token_secret(os.environ)
        pools = await sqlpaths.open_pools(
            os.environ["BENCH_SESSION_DSN"], os.environ["BENCH_REPUTATION_DSN"], size, secret
        )
        server.add_generic_rpc_handlers(fused_handlers(pools))
    server.add_insecure_port(f"127.0.0.1:{port}")
    if tls_port is not None:
        server.add_secure_port(f"127.0.0.1:{tls_port}", server_credentials(tls_settings(os.environ)))
    await serve_until_signal(server)
    if pools is not None:
        await sqlpaths.close_pools(pools)


def main(argv: list[str]) -> None:
    traced = tracing.wanted(os.environ)
    with tracing.installed(tracing.otlp_provider("bench-floor")) if traced else contextlib.nullcontext():
        asyncio.run(serve(argv[0], int(argv[1]), int(argv[2]) if len(argv) > 2 else None))


if __name__ == "__main__":
    main(sys.argv[1:])
