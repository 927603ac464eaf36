"""`make run` as an operator runs it: the real Makefile target, as a process, on certificates from a
CA of their own (made here, RSA, nothing like the dev set) named by the documented TLS_* variables,
with no development certificate in DATA_DIR. Both services become healthy over mutual TLS, a
client without a certificate is refused at the handshake, and a paired confirmation completes."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.reputation.v1 import reputation_pb2_grpc
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from bench.procs import free_port
from common.client import tls_credentials
from tests.helpers import make_run, make_run_env, make_token, new_id


@dataclass(frozen=True)
class OperatorPki:
    ca: Path
    server_cert: Path
    server_key: Path
    caller_cert: Path  # a caller of theirs, signed by the same CA
    caller_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Operator Inc"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def operator_pki(directory: Path) -> OperatorPki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Operator Root CA"))
        .issuer_name(_name("Operator Root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        name: str, sans: list[x509.GeneralName], usages: list[x509.ObjectIdentifier]
    ) -> tuple[bytes, bytes]:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), _pem_key(key)

    # The services' certificate serves TLS and, from the reputation service, authenticates it as a
    # client of the session service: both usages, as a mutual-TLS deployment needs.
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server = leaf("interview.operator.internal", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], both)
    caller = leaf("a caller", [], [ExtendedKeyUsageOID.CLIENT_AUTH])
    directory.mkdir(parents=True)
    pki = OperatorPki(
        *(directory / name for name in ("ca.crt", "svc.crt", "svc.key", "caller.crt", "caller.key"))
    )
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for path, data in ((pki.server_cert, server[0]), (pki.caller_cert, caller[0])):
        path.write_bytes(data)
    for path, data in ((pki.server_key, server[1]), (pki.caller_key, caller[1])):
        path.write_bytes(data)
        path.chmod(0o600)
    return pki


@pytest.fixture
async def operator_stack(tmp_path: Path):
    """`make run` with the operator's TLS_* files; yields (env, pki, session target, reputation target)."""
    pki = operator_pki(tmp_path / "operator-pki")
    data_dir = tmp_path / "data"
    session, reputation = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = make_run_env(
        data_dir,
        SESSION_LISTEN=session,
        REPUTATION_LISTEN=reputation,
        TLS_CERT_FILE=str(pki.server_cert),
        TLS_KEY_FILE=str(pki.server_key),
        TLS_CLIENT_CA_FILE=str(pki.ca),
        TLS_CA_FILE=str(pki.ca),
    )
    async with make_run(env) as lines:
        assert not (data_dir / "tls").exists(), "make run made development certificates"
        yield env, pki, session, reputation, lines


async def test_make_run_serves_mutual_tls_on_the_operators_own_certificates(operator_stack):
    env, pki, session, reputation, lines = operator_stack
    assert f"session_service  serving on {session} (mutual TLS)" in lines
    assert f"reputation_service  serving on {reputation} (mutual TLS)" in lines
    owner, partner = new_id(), new_id()
    tokens = {user: await make_token(env, user) for user in (owner, partner)}
    caller = tls_credentials(str(pki.ca), str(pki.caller_cert), str(pki.caller_key))

    def md(user: str) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {tokens[user]}"),)

    async with (
        grpc.aio.secure_channel(session, caller) as s,
        grpc.aio.secure_channel(reputation, caller) as r,
    ):
        sessions = sessions_pb2_grpc.SessionServiceStub(s)
        confirmations = reputation_pb2_grpc.ReputationServiceStub(r)
        created = await sessions.CreateSession(
            pb.CreateSessionRequest(job_posting_id=new_id(), partner_user_id=partner),
            metadata=md(owner),
            timeout=10,
        )
        first = await confirmations.ConfirmCompletion(
            rpb.ConfirmCompletionRequest(session_id=created.session_id), metadata=md(owner), timeout=10
        )
        second = await confirmations.ConfirmCompletion(
            rpb.ConfirmCompletionRequest(session_id=created.session_id), metadata=md(partner), timeout=10
        )
        assert not first.both_confirmed
        assert (second.both_confirmed, second.reputation_awarded) == (True, True)
        # Completed through the session service, over the operator's mutual TLS between the services.
        assert second.session_status == pb.SESSION_STATUS_COMPLETED and not second.completion_pending
        got = await sessions.GetSession(
            pb.GetSessionRequest(session_id=created.session_id), metadata=md(partner), timeout=10
        )
        assert got.status == pb.SESSION_STATUS_COMPLETED

    # Trusting the right CA but showing no certificate: refused at the handshake.
    anonymous = tls_credentials(str(pki.ca), None, None)
    for target in (session, reputation):
        async with grpc.aio.secure_channel(target, anonymous) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await sessions_pb2_grpc.SessionServiceStub(channel).GetSession(
                    pb.GetSessionRequest(session_id=new_id()), metadata=md(owner), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
