"""TLS and mutual TLS, for real: both servers serve TLS, the session service requires a client
certificate signed by the stack's CA, and the reputation service dials it presenting its own.

Certificates come from `common.devcerts` (the ones `make run --tls` makes). A second, unrelated CA
plays the outsider. Typed clients, `buf curl` and the container health check go over the same
servers. A client the server does not accept fails at the handshake: UNAVAILABLE, before any
token is looked at.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from common.app import AppServer
from common.auth import mint
from common.client import RetryPolicy, TokenProvider, error_reason, tls_credentials
from common.config import TlsSettings
from common.devcerts import DevCertificates, write_dev_certificates
from reputation_service import api as reputation_api
from reputation_service.client import ReputationClient, SyncReputationClient
from session_service import api as session_api
from session_service.client import SessionClient, SessionInternalClient, SyncSessionClient
from tests.helpers import StackKeys, buf_env, new_id, run_buf, service_token
from tests.servers import reputation_config_for, session_config_for, wait_serving

HOSTS = ["localhost", "127.0.0.1"]
REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_TIMEOUT_SECONDS = 60.0
# As few attempts as gRPC allows (2), quickly: a refused handshake is final, nothing to wait for.
NO_RETRY = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)


@dataclass
class TlsStack:
    certs: DevCertificates
    outsider: DevCertificates  # another CA, with its own server and client certificates
    session_port: int
    reputation_port: int

    @property
    def session(self) -> str:
        return f"127.0.0.1:{self.session_port}"

    @property
    def reputation(self) -> str:
        return f"127.0.0.1:{self.reputation_port}"

    def client_credentials(self) -> grpc.ChannelCredentials:
        """What a person or a test presents: trusts the stack's CA, shows the dev client certificate."""
        return tls_credentials(str(self.certs.ca), str(self.certs.client_cert), str(self.certs.client_key))


async def start_app(app: AppServer, credentials: grpc.ChannelCredentials) -> AppServer:
    await app.start()
    try:
        await wait_serving(f"127.0.0.1:{app.port}", credentials)
    except BaseException:
        await app.stop(grace=1)
        raise
    return app


@pytest.fixture(scope="module")
async def tls_stack(
    database_url: str, keys: StackKeys, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TlsStack]:
    certs = write_dev_certificates(tmp_path_factory.mktemp("tls"), HOSTS)
    outsider = write_dev_certificates(tmp_path_factory.mktemp("other-ca"), HOSTS, ca_name="someone else's CA")
    client = tls_credentials(str(certs.ca), str(certs.client_cert), str(certs.client_key))
    mutual = TlsSettings(
        cert_file=str(certs.server_cert), key_file=str(certs.server_key), client_ca_file=str(certs.ca)
    )
    session = await start_app(
        session_api.create_server(session_config_for(database_url, keys, tls=mutual)), client
    )
    try:
        dialling = TlsSettings(
            cert_file=str(certs.server_cert),
            key_file=str(certs.server_key),
            client_ca_file=str(certs.ca),
            ca_file=str(certs.ca),
        )
        reputation = await start_app(
            reputation_api.create_server(
                reputation_config_for(database_url, keys, f"127.0.0.1:{session.port}", tls=dialling)
            ),
            client,
        )
        try:
            yield TlsStack(certs, outsider, session.port, reputation.port)
        finally:
            await reputation.stop(grace=1)
    finally:
        await session.stop(grace=1)


def user_tokens(keys: StackKeys, user_id: str) -> TokenProvider:
    return lambda: mint(keys.jwt, keys.jwt.key, user_id, 300)


# --- Typed clients -------------------------------------------------------------------------------


async def test_the_typed_async_clients_work_over_mutual_tls_with_the_client_certificate(tls_stack, keys):
    owner = new_id()
    credentials = tls_stack.client_credentials()
    async with SessionClient.connect(
        tls_stack.session, user_tokens(keys, owner), credentials=credentials
    ) as sessions:
        created = await sessions.create_session(new_id())
        assert created.user_id == owner
        assert (await sessions.get_session(created.session_id)) == created
        listed = await sessions.list_sessions()
        assert [s.session_id for s in listed.sessions] == [created.session_id]

    async with SessionInternalClient.connect(
        tls_stack.session, lambda: service_token(keys.service), credentials=credentials
    ) as internal:
        assert (await internal.lookup_session(created.session_id)).session_id == created.session_id

    async with ReputationClient.connect(
        tls_stack.reputation, user_tokens(keys, owner), credentials=credentials
    ) as reputation:
        score = await reputation.get_reputation()
        assert (score.user_id, score.score) == (owner, 0)


async def test_the_typed_blocking_clients_work_over_mutual_tls_with_the_client_certificate(tls_stack, keys):
    owner = new_id()

    def blocking() -> tuple[pb.Session, pb.Session, rpb.Reputation]:
        credentials = tls_stack.client_credentials()
        with SyncSessionClient.connect(
            tls_stack.session, user_tokens(keys, owner), credentials=credentials
        ) as sessions:
            created = sessions.create_session(new_id())
            fetched = sessions.get_session(created.session_id)
        with SyncReputationClient.connect(
            tls_stack.reputation, user_tokens(keys, owner), credentials=credentials
        ) as reputation:
            return created, fetched, reputation.get_reputation()

    # The servers run on this event loop: the blocking calls go on a thread.
    created, fetched, score = await asyncio.to_thread(blocking)
    assert created == fetched and created.user_id == owner
    assert score.user_id == owner


async def test_a_client_dialling_localhost_by_name_verifies_the_certificate_too(tls_stack, keys):
    async with SessionClient.connect(
        f"localhost:{tls_stack.session_port}",
        user_tokens(keys, new_id()),
        credentials=tls_stack.client_credentials(),
    ) as sessions:
        assert (await sessions.list_sessions()).sessions == []


# --- Clients the servers refuse ------------------------------------------------------------------


def refused_credentials(stack: TlsStack) -> dict[str, grpc.ChannelCredentials | None]:
    certs, outsider = stack.certs, stack.outsider
    return {
        "no client certificate": tls_credentials(str(certs.ca)),
        "a client certificate from another CA": tls_credentials(
            str(certs.ca), str(outsider.client_cert), str(outsider.client_key)
        ),
        "another CA's server certificate as client certificate": tls_credentials(
            str(certs.ca), str(outsider.server_cert), str(outsider.server_key)
        ),
        "a good client certificate but not trusting the server's CA": tls_credentials(
            str(outsider.ca), str(certs.client_cert), str(certs.client_key)
        ),
        "plaintext": None,
    }


REFUSED = [
    "no client certificate",
    "a client certificate from another CA",
    "another CA's server certificate as client certificate",
    "a good client certificate but not trusting the server's CA",
    "plaintext",
]


@pytest.mark.parametrize("server", ["session", "reputation"])
@pytest.mark.parametrize("client", REFUSED)
async def test_a_client_without_an_accepted_certificate_fails_at_the_handshake(
    tls_stack, keys, db, server, client
):
    credentials = refused_credentials(tls_stack)[client]
    target = tls_stack.session if server == "session" else tls_stack.reputation
    posting = new_id()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if server == "session":
            async with SessionClient.connect(
                target, user_tokens(keys, new_id()), deadline=3, retry=NO_RETRY, credentials=credentials
            ) as sessions:
                await sessions.create_session(posting)
        else:
            async with ReputationClient.connect(
                target, user_tokens(keys, new_id()), deadline=3, retry=NO_RETRY, credentials=credentials
            ) as reputation:
                await reputation.get_reputation()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value
    assert await db.fetchval("SELECT count(*) FROM sessions.sessions WHERE job_posting_id = $1", posting) == 0


def test_every_refused_client_is_in_the_table(tmp_path):
    certs = write_dev_certificates(tmp_path / "a", HOSTS)
    assert set(refused_credentials(TlsStack(certs, certs, 0, 0))) == set(REFUSED)


async def test_a_tls_server_without_a_client_ca_accepts_a_client_without_a_certificate(
    database_url, keys, tmp_path
):
    certs = write_dev_certificates(tmp_path / "tls", HOSTS)
    tls = TlsSettings(cert_file=str(certs.server_cert), key_file=str(certs.server_key))
    app = await start_app(
        session_api.create_server(session_config_for(database_url, keys, tls=tls)),
        tls_credentials(str(certs.ca)),
    )
    try:
        owner = new_id()
        async with SessionClient.connect(
            f"127.0.0.1:{app.port}", user_tokens(keys, owner), credentials=tls_credentials(str(certs.ca))
        ) as sessions:
            assert (await sessions.create_session(new_id())).user_id == owner
        # Still TLS: a plaintext client is refused.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with SessionClient.connect(
                f"127.0.0.1:{app.port}", user_tokens(keys, owner), deadline=3, retry=NO_RETRY
            ) as plaintext:
                await plaintext.list_sessions()
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await app.stop(grace=1)


# --- The reputation service over mutual TLS ------------------------------------------------------


async def test_a_paired_session_confirmed_by_both_over_tls_is_completed_through_mutual_tls(
    tls_stack, keys, db
):
    owner, partner = new_id(), new_id()
    credentials = tls_stack.client_credentials()
    async with SessionClient.connect(
        tls_stack.session, user_tokens(keys, owner), credentials=credentials
    ) as sessions:
        paired = await sessions.create_session(new_id(), partner_user_id=partner)

    async with (
        ReputationClient.connect(
            tls_stack.reputation, user_tokens(keys, owner), credentials=credentials
        ) as as_owner,
        ReputationClient.connect(
            tls_stack.reputation, user_tokens(keys, partner), credentials=credentials
        ) as as_partner,
    ):
        first = await as_owner.confirm_completion(paired.session_id)
        assert first.session_status == pb.SESSION_STATUS_ACTIVE  # looked up over mutual TLS
        second = await as_partner.confirm_completion(paired.session_id)

    assert second.both_confirmed and second.reputation_awarded
    assert second.session_status == pb.SESSION_STATUS_COMPLETED
    assert second.completion_pending is False
    row = await db.fetchrow(
        "SELECT status, complete_time FROM sessions.sessions WHERE session_id = $1", paired.session_id
    )
    assert row["status"] == "completed" and row["complete_time"] is not None


async def test_a_reputation_service_presenting_no_certificate_cannot_reach_the_mutual_tls_session_service(
    database_url, keys, tls_stack
):
    """The control for the case above: the completion really depends on the reputation service's
    certificate. Without one, its calls fail at the handshake and it reports the session service
    unavailable."""
    trusting_only = TlsSettings(ca_file=str(tls_stack.certs.ca))
    app = reputation_api.create_server(
        reputation_config_for(database_url, keys, tls_stack.session, tls=trusting_only)
    )
    await app.start()
    try:
        await wait_serving(f"127.0.0.1:{app.port}")
        owner = new_id()
        async with SessionClient.connect(
            tls_stack.session, user_tokens(keys, owner), credentials=tls_stack.client_credentials()
        ) as sessions:
            paired = await sessions.create_session(new_id(), partner_user_id=new_id())
        async with ReputationClient.connect(
            f"127.0.0.1:{app.port}", user_tokens(keys, owner), retry=NO_RETRY
        ) as reputation:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await reputation.confirm_completion(paired.session_id)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(raised.value) == "SESSIONS_UNAVAILABLE"
    finally:
        await app.stop(grace=1)


# --- buf curl ------------------------------------------------------------------------------------


async def test_buf_curl_gets_a_session_over_mutual_tls_with_cacert_cert_and_key(tls_stack, keys, tmp_path):
    owner = new_id()
    async with SessionClient.connect(
        tls_stack.session, user_tokens(keys, owner), credentials=tls_stack.client_credentials()
    ) as sessions:
        created = await sessions.create_session(new_id())
    certs = tls_stack.certs
    url = f"https://localhost:{tls_stack.session_port}/interview.sessions.v1.SessionService/GetSession"
    token = mint(keys.jwt, keys.jwt.key, owner, 300)

    code, stdout, stderr = await run_buf(
        url,
        {"session_id": created.session_id},
        f"Bearer {token}",
        "--cacert",
        str(certs.ca),
        "--cert",
        str(certs.client_cert),
        "--key",
        str(certs.client_key),
        env=buf_env(tmp_path),
        within=SUBPROCESS_TIMEOUT_SECONDS,
    )
    assert code == 0, stderr
    got = json.loads(stdout)
    assert (got["sessionId"], got["userId"], got["status"]) == (
        created.session_id,
        owner,
        "SESSION_STATUS_ACTIVE",
    )

    # Without a client certificate the same call fails in the transport (exit below 8), not as an RPC.
    code, stdout, stderr = await run_buf(
        url,
        {"session_id": created.session_id},
        f"Bearer {token}",
        "--cacert",
        str(certs.ca),
        env=buf_env(tmp_path),
        within=SUBPROCESS_TIMEOUT_SECONDS,
    )
    assert 0 < code < 8, (code, stdout, stderr)
    assert stdout == ""


# --- The container health check ------------------------------------------------------------------


async def healthcheck(target: str, tls_env: dict[str, str]) -> tuple[int, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TLS_")}
    env.update(tls_env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "common.healthcheck",
        target,
        cwd=REPO,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), SUBPROCESS_TIMEOUT_SECONDS)
    assert process.returncode is not None
    return process.returncode, output.decode()


def service_tls_env(certs: DevCertificates) -> dict[str, str]:
    """The environment of a service container running with mutual TLS."""
    return {
        "TLS_CERT_FILE": str(certs.server_cert),
        "TLS_KEY_FILE": str(certs.server_key),
        "TLS_CLIENT_CA_FILE": str(certs.ca),
        "TLS_CA_FILE": str(certs.ca),
    }


@pytest.mark.parametrize("server", ["session", "reputation"])
async def test_the_health_check_passes_against_a_mutual_tls_server_with_the_services_tls_settings(
    tls_stack, server
):
    target = tls_stack.session if server == "session" else tls_stack.reputation
    code, output = await healthcheck(target, service_tls_env(tls_stack.certs))
    assert code == 0, output


async def test_the_health_check_passes_with_only_cert_key_and_ca_set(tls_stack):
    certs = tls_stack.certs
    env = {
        "TLS_CERT_FILE": str(certs.server_cert),
        "TLS_KEY_FILE": str(certs.server_key),
        "TLS_CA_FILE": str(certs.ca),
    }
    code, output = await healthcheck(tls_stack.session, env)
    assert code == 0, output


HEALTHCHECK_FAILS = {
    "no TLS settings (plaintext)": lambda stack: {},
    "a certificate from another CA": lambda stack: {
        "TLS_CERT_FILE": str(stack.outsider.server_cert),
        "TLS_KEY_FILE": str(stack.outsider.server_key),
        "TLS_CA_FILE": str(stack.certs.ca),
    },
    "trusting another CA": lambda stack: {
        "TLS_CERT_FILE": str(stack.certs.server_cert),
        "TLS_KEY_FILE": str(stack.certs.server_key),
        "TLS_CA_FILE": str(stack.outsider.ca),
    },
}


@pytest.mark.parametrize("case", list(HEALTHCHECK_FAILS))
async def test_the_health_check_fails_against_a_mutual_tls_server_without_usable_tls_settings(
    tls_stack, case
):
    code, output = await healthcheck(tls_stack.session, HEALTHCHECK_FAILS[case](tls_stack))
    assert code == 1, output
