"""gRPC credentials from TlsSettings: what a server listens with and what a client dials with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from common.client import tls_credentials
from common.config import TlsSettings


def _read(path: str) -> bytes | None:
    return Path(path).read_bytes() if path else None


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """TLS with our certificate; with a client CA, a client must present a certificate it signed
    or the handshake fails."""
    client_ca = _read(tls.client_ca_file)
    return grpc.ssl_server_credentials(
        [(Path(tls.key_file).read_bytes(), Path(tls.cert_file).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    """Trust `ca_file` (the system roots when unset) and present our certificate if we have one."""
    return tls_credentials(tls.ca_file or None, tls.cert_file or None, tls.key_file or None)


def aio_channel(target: str, tls: TlsSettings | None, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    """A grpc.aio channel: TLS when `tls` has a CA to trust, plaintext when `tls` is None or empty."""
    if tls is None or not tls.ca_file:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)


def sync_channel(target: str, tls: TlsSettings | None, options: list[tuple[str, Any]]) -> grpc.Channel:
    """The blocking twin of `aio_channel`."""
    if tls is None or not tls.ca_file:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, channel_credentials(tls), options=options)
