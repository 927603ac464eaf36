"""`python -m common.healthcheck [host:port ...]`: exit 0 only if an address answers SERVING.

A container healthcheck over the gRPC health protocol (overall status, 2 s deadline). With no
address it tries this container's service on loopback: the ports of SESSION_LISTEN and
REPUTATION_LISTEN (one image runs either service; the other port is simply closed). When the
service serves TLS (TLS_CERT_FILE), the check dials TLS too, trusting TLS_CA_FILE and presenting
the service's own certificate for mutual TLS."""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.config import ConfigError, TlsSettings, tls_settings
from common.tls import sync_channel

DEADLINE_SECONDS = 2.0


def serving(target: str, tls: TlsSettings) -> bool:
    try:
        with sync_channel(target, tls if tls.serving else None, []) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=DEADLINE_SECONDS
            )
    except grpc.RpcError:
        return False
    answered_serving: bool = reply.status == health_pb2.HealthCheckResponse.SERVING  # grpc_health is untyped
    return answered_serving


def main(argv: list[str]) -> int:
    targets = argv or [
        "127.0.0.1:" + os.environ.get(name, default).rpartition(":")[2]
        for name, default in (("SESSION_LISTEN", "127.0.0.1:50051"), ("REPUTATION_LISTEN", "127.0.0.1:50052"))
    ]
    try:
        tls = tls_settings(os.environ)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    return 0 if any(serving(target, tls) for target in targets) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
