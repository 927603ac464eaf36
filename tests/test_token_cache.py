"""Verified tokens are remembered only as long as a fresh verification would accept them."""

from __future__ import annotations

import time

import jwt
import pytest

from common import auth
from common.auth import TokenVerifier, mint
from common.config import JwtSettings
from common.errors import Unauthenticated
from tests.helpers import new_id

SETTINGS = JwtSettings("HS256", "s" * 40, "interview-dev", "interview")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_a_cached_token_is_verified_afresh_once_past_exp_plus_leeway(monkeypatch):
    clock = Clock()
    verifier = TokenVerifier(SETTINGS, clock)
    decoded = []
    real_decode = verifier._decode
    monkeypatch.setattr(verifier, "_decode", lambda token: decoded.append(token) or real_decode(token))
    user = new_id()
    token = mint(SETTINGS, SETTINGS.key, user, ttl_seconds=60)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]

    assert verifier.verify("Bearer " + token).user_id == user
    assert verifier._verified[token][1] == exp + auth.LEEWAY_SECONDS
    clock.now = exp + auth.LEEWAY_SECONDS
    assert verifier.verify("Bearer " + token).user_id == user
    assert len(decoded) == 1
    clock.now += 1
    verifier.verify("Bearer " + token)
    assert len(decoded) == 2


def test_a_rejected_token_is_never_remembered_as_good():
    verifier = TokenVerifier(SETTINGS)
    forged = mint(SETTINGS, "another-key-of-enough-length-0123456789", new_id(), 60)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            verifier.verify("Bearer " + forged)


def test_the_cache_stays_bounded(monkeypatch):
    monkeypatch.setattr(auth, "TOKEN_CACHE_SIZE", 3)
    verifier = TokenVerifier(SETTINGS)
    tokens = ["Bearer " + mint(SETTINGS, SETTINGS.key, new_id(), 60) for _ in range(5)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == 3
    assert all(verifier.verify(token).user_id for token in tokens)
