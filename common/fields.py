"""Request validation that collects every bad field, opaque keyset page tokens, and timestamps."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.timestamp_pb2 import Timestamp

from common.errors import InvalidArgument

if TYPE_CHECKING:
    # Stub-only: the metaclass mypy-protobuf gives every generated enum (SessionStatus, ...).
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

# A generated enum's number type (SessionStatus.ValueType, ...), an int at run time.
_Number = TypeVar("_Number", bound=int)

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_MAC_BYTES = 16
# Longer than any cursor we make: a bigger token is refused before it is decoded.
MAX_PAGE_TOKEN_CHARS = 512
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _sequence(value: Any) -> bool:
    """A row sequence number (bigserial): a whole number in PostgreSQL's bigint range."""
    return type(value) is int and 0 <= value < 2**63


def _number(value: Any) -> bool:
    """A count or ordinal in PostgreSQL's integer range."""
    return type(value) is int and 0 <= value < 2**31


def _moment(value: Any) -> bool:
    """A timestamp in microseconds since 1970 that Python's datetime can hold (up to year 9999)."""
    return type(value) is int and 0 <= value < 253_402_300_800_000_000


def _uuid(value: Any) -> bool:
    return isinstance(value, str) and _CANONICAL_UUID.fullmatch(value) is not None


class Cursor:
    """The shape of one list's cursor: the check each position must pass."""

    SEQUENCE = _sequence
    NUMBER = _number
    MOMENT = _moment
    UUID = _uuid

    def __init__(self, *positions: Callable[[Any], bool]) -> None:
        self.positions = positions

    def fits(self, cursor: Any) -> bool:
        return (
            isinstance(cursor, list)
            and len(cursor) == len(self.positions)
            and all(check(value) for check, value in zip(self.positions, cursor, strict=True))
        )


def timestamp(moment: datetime | None) -> Timestamp | None:
    """A stored timestamp as a proto Timestamp; None stays unset."""
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class PageTokens:
    """Signs keyset cursors so a token works only for the caller and parameters it was made for."""

    def __init__(self, secret: bytes) -> None:
        self._secret = hashlib.sha256(b"page-token\0" + secret).digest()

    def _mac(self, scope: str, payload: bytes) -> bytes:
        return hmac.new(self._secret, scope.encode() + b"\0" + payload, "sha256").digest()[:_MAC_BYTES]

    def encode(self, scope: str, cursor: list[Any]) -> str:
        payload = json.dumps(cursor, separators=(",", ":")).encode()
        raw = self._mac(scope, payload) + payload
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def next_token(self, scope: str, rows: list[Any], limit: int, cursor: Callable[[Any], list[Any]]) -> str:
        """The token for the page after `rows` (fetched with limit + 1), or "" on the last page."""
        return self.encode(scope, cursor(rows[limit - 1])) if len(rows) > limit else ""

    def decode(self, scope: str, token: str, shape: Cursor) -> list[Any] | None:
        """The cursor in `token` if we signed it for `scope` and it has `shape`, else None."""
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(scope, payload)):
            return None
        try:
            cursor = json.loads(payload)
        except (ValueError, RecursionError):
            return None
        return cursor if shape.fits(cursor) else None


class Fields:
    """Collects the problems of one request; `done()` raises them together as INVALID_ARGUMENT."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def uuid(self, name: str, value: str) -> str:
        """A required UUID, returned in canonical lowercase form."""
        if not value:
            self.problems[name] = "is required"
        elif not _UUID.fullmatch(value):
            self.problems[name] = "must be a UUID"
        return value.lower()

    def optional_uuid(self, name: str, value: str) -> str | None:
        return self.uuid(name, value) if value else None

    def enum(
        self, name: str, value: _Number, allowed: Mapping[_Number, str], enum_type: _EnumTypeWrapper[_Number]
    ) -> str:
        """The domain name a proto enum number maps to; anything not in `allowed` is a problem."""
        if value not in allowed:
            choices = ", ".join(enum_type.Name(number) for number in allowed)
            self.problems[name] = f"must be one of {choices}"
        return allowed.get(value, "")

    def page_size(self, value: int) -> int:
        if value < 0:
            self.problems["page_size"] = "must not be negative"
        return DEFAULT_PAGE_SIZE if value <= 0 else min(value, MAX_PAGE_SIZE)

    def page_token(self, tokens: PageTokens, scope: str, token: str, shape: Cursor) -> list[Any] | None:
        """The cursor inside `token` (None for the first page)."""
        if not token:
            return None
        cursor = tokens.decode(scope, token, shape)
        if cursor is None:
            self.problems["page_token"] = "is not a token this list gave to this caller with these parameters"
        return cursor

    def add(self, name: str, problem: str) -> None:
        self.problems[name] = problem

    def done(self) -> None:
        if self.problems:
            raise InvalidArgument(self.problems)
