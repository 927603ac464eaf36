"""RS256 and EdDSA deployments: public keys verify, private keys sign, nothing else gets in."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from interview.sessions.v1 import sessions_pb2 as pb
from interview.sessions.v1 import sessions_pb2_grpc

from common.auth import Authenticator, mint
from common.config import JwtSettings
from common.errors import Unauthenticated
from session_service import api as session_api
from tests.helpers import expect_error, new_id
from tests.servers import session_config_for


def _keypair(algorithm: str) -> tuple[str, str]:
    private = (
        rsa.generate_private_key(65537, 2048)
        if algorithm == "RS256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


@pytest.fixture(scope="module", params=["RS256", "EdDSA"])
def asymmetric(request) -> tuple[JwtSettings, str]:
    private_pem, public_pem = _keypair(request.param)
    return JwtSettings(request.param, public_pem, "interview-dev", "interview"), private_pem


async def test_a_token_signed_with_the_private_key_is_accepted(asymmetric):
    settings, private_pem = asymmetric
    user = new_id()
    principal = await Authenticator(settings, "").authenticate(
        ["Bearer " + mint(settings, private_pem, user, 60)]
    )
    assert principal.user_id == user


async def test_an_hs256_token_keyed_with_the_public_key_is_rejected(asymmetric):
    # The algorithm-confusion attack: the public key is public, so it must never work as a secret.
    settings, _ = asymmetric
    claims = {"sub": new_id(), "iss": settings.issuer, "aud": settings.audience, "exp": 2_000_000_000}

    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}"
    mac = hmac.new(settings.key.encode(), signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(Unauthenticated):
        await Authenticator(settings, "").authenticate(["Bearer " + forged])


async def test_a_token_signed_by_another_private_key_is_rejected(asymmetric):
    settings, _ = asymmetric
    other_private, _ = _keypair(settings.algorithm)
    with pytest.raises(Unauthenticated):
        await Authenticator(settings, "").authenticate(
            ["Bearer " + mint(settings, other_private, new_id(), 60)]
        )


async def test_a_session_service_pinned_to_an_asymmetric_algorithm_serves_its_tokens_only(
    asymmetric, database_url, keys, jwt_settings
):
    settings, private_pem = asymmetric
    app = session_api.create_server(session_config_for(database_url, keys, jwt=settings, pool_size=2))
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = sessions_pb2_grpc.SessionServiceStub(channel)
            owner = new_id()
            good = (("authorization", "Bearer " + mint(settings, private_pem, owner, 60)),)
            created = await stub.CreateSession(
                pb.CreateSessionRequest(job_posting_id=new_id()), metadata=good
            )
            assert created.user_id == owner
            hs256 = (("authorization", "Bearer " + mint(jwt_settings, jwt_settings.key, owner, 60)),)
            await expect_error(
                stub.GetSession(pb.GetSessionRequest(session_id=created.session_id), metadata=hs256),
                grpc.StatusCode.UNAUTHENTICATED,
                "UNAUTHENTICATED",
            )
    finally:
        await app.stop(grace=1)
