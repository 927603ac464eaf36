"""What every typed client shares: gRPC's own retry policy, bearer metadata, deadlines, error reasons."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Self, TypedDict, TypeVar, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from interview.reputation.v1 import reputation_pb2
from interview.sessions.v1 import sessions_pb2

# Returns the bearer token for the next call; called once per call so a caller can refresh tokens.
TokenProvider = Callable[[], str]
DEFAULT_DEADLINE = 5.0  # seconds for a whole call, retries included
# The trailing metadata entry in which a failed call carries its google.rpc.Status, details included.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# Every service of our contracts: a channel's retry policy covers whichever of them it calls.
SERVICES = [
    service.full_name
    for contract in (sessions_pb2.DESCRIPTOR, reputation_pb2.DESCRIPTOR)
    for service in contract.services_by_name.values()
]
ChannelT = TypeVar("ChannelT")
StubT = TypeVar("StubT")


@dataclass(frozen=True)
class RetryPolicy:
    """gRPC's retry policy, for UNAVAILABLE only: the code our services use for "nothing done, retry"."""

    max_attempts: int = 4  # gRPC caps this at 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    backoff_multiplier: float = 2.0


RETRY = RetryPolicy()


def service_config(retry: RetryPolicy) -> str:
    """The `grpc.service_config` JSON that makes the channel itself retry calls to our services."""
    policy = {
        "maxAttempts": retry.max_attempts,
        "initialBackoff": f"{retry.initial_backoff}s",
        "maxBackoff": f"{retry.max_backoff}s",
        "backoffMultiplier": retry.backoff_multiplier,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": service} for service in SERVICES]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


def channel_options(retry: RetryPolicy = RETRY) -> list[tuple[str, Any]]:
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config(retry))]


def tls_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """Channel credentials for TLS: trust `ca_file` (the system roots when None) and, for mutual
    TLS, present the certificate chain in `cert_file` with its key in `key_file`."""

    return grpc.ssl_channel_credentials(_read(ca_file), _read(key_file), _read(cert_file))


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


def bearer(tokens: TokenProvider) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {tokens()}"),)


class CallOptions(TypedDict):
    metadata: tuple[tuple[str, str]]
    timeout: float


def error_reason(error: grpc.RpcError) -> str | None:
    """The google.rpc.ErrorInfo reason of a failed call (e.g. "SESSION_NOT_FOUND"), if it has one."""
    # Sync and aio errors both carry trailing_metadata(), as (key, value) pairs. Read directly (not
    # with grpcio-status's from_call) so the clients need nothing beyond grpcio and the protos.
    metadata = dict(cast(grpc.Call, error).trailing_metadata() or ())
    status = status_pb2.Status.FromString(metadata.get(STATUS_DETAILS_KEY, b""))
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason: str = info.reason
            return reason
    return None


class _Client(Generic[ChannelT, StubT]):
    """A channel's stub, a token provider and a deadline, turned into the options of each call."""

    stub: Callable[[ChannelT], StubT]  # the generated stub class, set by each client

    def __init__(self, channel: ChannelT, tokens: TokenProvider, deadline: float = DEFAULT_DEADLINE) -> None:
        self._channel = channel
        self._stub = self.stub(channel)
        self._tokens = tokens
        self._deadline = deadline

    def _call(self) -> CallOptions:
        return {"metadata": bearer(self._tokens), "timeout": self._deadline}


class AsyncClient(_Client[grpc.aio.Channel, StubT]):
    """Base of the grpc.aio clients: `connect(target, tokens)` (TLS with `credentials`, e.g. from
    `tls_credentials`), or pass your own channel; give it `channel_options()` to keep the retry policy."""

    @classmethod
    def connect(
        cls,
        target: str,
        tokens: TokenProvider,
        deadline: float = DEFAULT_DEADLINE,
        retry: RetryPolicy = RETRY,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> Self:
        options = channel_options(retry)
        if credentials is None:
            return cls(grpc.aio.insecure_channel(target, options=options), tokens, deadline)
        return cls(grpc.aio.secure_channel(target, credentials, options=options), tokens, deadline)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class SyncClient(_Client[grpc.Channel, StubT]):
    """Base of the blocking clients: `connect(target, tokens)` (TLS with `credentials`), or pass
    your own grpc.Channel."""

    @classmethod
    def connect(
        cls,
        target: str,
        tokens: TokenProvider,
        deadline: float = DEFAULT_DEADLINE,
        retry: RetryPolicy = RETRY,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> Self:
        options = channel_options(retry)
        if credentials is None:
            return cls(grpc.insecure_channel(target, options=options), tokens, deadline)
        return cls(grpc.secure_channel(target, credentials, options=options), tokens, deadline)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
