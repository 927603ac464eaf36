"""Verified tokens are remembered only as long as a fresh verification would accept them."""

from __future__ import annotations

import time

import jwt
import pytest

from common.auth import Authenticator, mint, verify
from common.config import JwtSettings
from common.errors import Unauthenticated
from tests.helpers import new_id

SETTINGS = JwtSettings("HS256", "s" * 40, "interview-dev", "interview")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _counting(verifier: Authenticator, monkeypatch) -> list[str]:
    decoded: list[str] = []
    real_decode = verifier._decode

    async def decode(token: str):
        decoded.append(token)
        return await real_decode(token)

    monkeypatch.setattr(verifier, "_decode", decode)
    return decoded


async def test_a_cached_token_is_verified_afresh_once_past_exp_plus_leeway(monkeypatch):
    clock = Clock()
    verifier = Authenticator(SETTINGS, "", clock)
    decoded = _counting(verifier, monkeypatch)
    user = new_id()
    token = mint(SETTINGS, SETTINGS.key, user, ttl_seconds=20)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]

    assert (await verifier.authenticate(["Bearer " + token])).user_id == user
    assert verifier._verified[token][1] == exp + verify.LEEWAY_SECONDS
    clock.now = exp + verify.LEEWAY_SECONDS
    assert (await verifier.authenticate(["Bearer " + token])).user_id == user
    assert len(decoded) == 1
    clock.now += 1
    await verifier.authenticate(["Bearer " + token])
    assert len(decoded) == 2


async def test_a_cached_token_is_verified_afresh_at_least_every_recheck_interval(monkeypatch):
    # So a key removed from a JWK Set URL stops working even for tokens already seen.
    clock = Clock()
    verifier = Authenticator(SETTINGS, "", clock)
    decoded = _counting(verifier, monkeypatch)
    token = "Bearer " + mint(SETTINGS, SETTINGS.key, new_id(), ttl_seconds=3600)
    await verifier.authenticate([token])
    clock.now += verify.RECHECK_SECONDS
    await verifier.authenticate([token])
    assert len(decoded) == 1
    clock.now += 1
    await verifier.authenticate([token])
    assert len(decoded) == 2


async def test_a_rejected_token_is_never_remembered_as_good():
    verifier = Authenticator(SETTINGS, "")
    forged = mint(SETTINGS, "another-key-of-enough-length-0123456789", new_id(), 60)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await verifier.authenticate(["Bearer " + forged])


async def test_the_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(verify, "TOKEN_CACHE_SIZE", 3)
    verifier = Authenticator(SETTINGS, "")
    tokens = ["Bearer " + mint(SETTINGS, SETTINGS.key, new_id(), 60) for _ in range(5)]
    for token in tokens:
        await verifier.authenticate([token])
    assert len(verifier._verified) == 3
    assert all([(await verifier.authenticate([token])).user_id for token in tokens])
