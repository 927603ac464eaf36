"""What each scenario sends: deterministic ids shared with the SQL seeding, and one request per call.

Ids are md5(tag:number) read as a UUID, so the seeding SQL and the load processes agree on them
without shipping lists of ids between processes.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from interview.reputation.v1 import reputation_pb2 as rpb
from interview.sessions.v1 import sessions_pb2 as pb

from common.fields import PageTokens

HOT_USERS = 64
SESSIONS_PER_USER = 100
CONTENT = "Tell me about a bug that took you more than a day to find, and how you found it."
SESSIONS = "/interview.sessions.v1.SessionService/"
REPUTATION = "/interview.reputation.v1.ReputationService/"


def uid(tag: str, number: int) -> str:
    return str(uuid.UUID(hashlib.md5(f"{tag}:{number}".encode()).hexdigest()))


def sql_uid(tag: str, expression: str) -> str:
    """The SQL twin of uid(): the same UUID for the same tag and number."""
    return f"md5('{tag}:' || ({expression}))::uuid"


def hot_user(number: int) -> str:
    return uid("hot", number % HOT_USERS)


def board_entry(size: int, rank: int) -> tuple[int, str]:
    """(score, user_id) at `rank` of the seeded all-time board of `size` users: user uid("board", i)
    has score size - i, so ranks follow i."""
    return size - (rank - 1), uid("board", rank - 1)


def users_of(size: int) -> int:
    """How many users own a seeded set of `size` sessions (each owns about SESSIONS_PER_USER)."""
    return max(2, size // SESSIONS_PER_USER)


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str  # full gRPC method path
    request: Any
    response: Any
    consumes: bool  # every call needs a fresh pre-created row
    service: str  # which service answers: "session" or "reputation"


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("GetSession", SESSIONS + "GetSession", pb.GetSessionRequest, pb.Session, False, "session"),
        Scenario(
            "ListSessions",
            SESSIONS + "ListSessions",
            pb.ListSessionsRequest,
            pb.ListSessionsResponse,
            False,
            "session",
        ),
        Scenario(
            "ListMessages",
            SESSIONS + "ListMessages",
            pb.ListMessagesRequest,
            pb.ListMessagesResponse,
            False,
            "session",
        ),
        Scenario(
            "CreateSession", SESSIONS + "CreateSession", pb.CreateSessionRequest, pb.Session, False, "session"
        ),
        Scenario(
            "AppendMessage",
            SESSIONS + "AppendMessage",
            pb.AppendMessageRequest,
            pb.SessionMessage,
            False,
            "session",
        ),
        Scenario(
            "CompleteSession",
            SESSIONS + "CompleteSession",
            pb.CompleteSessionRequest,
            pb.Session,
            True,
            "session",
        ),
        Scenario(
            "RetakeSession", SESSIONS + "RetakeSession", pb.RetakeSessionRequest, pb.Session, True, "session"
        ),
        Scenario(
            "ListLeaderboard",
            REPUTATION + "ListLeaderboard",
            rpb.ListLeaderboardRequest,
            rpb.ListLeaderboardResponse,
            False,
            "reputation",
        ),
        Scenario(
            "ConfirmCompletion",
            REPUTATION + "ConfirmCompletion",
            rpb.ConfirmCompletionRequest,
            rpb.Confirmation,
            True,
            "reputation",
        ),
    ]
}


@dataclass(frozen=True)
class Data:
    """Where the seeded rows are, as the load processes need to know it."""

    set_tag: str  # the seeded read set: sessions uid(set_tag, i), owners uid(set_tag + "u", i % users)
    set_size: int
    conversation: str  # the session with many messages, owned by hot_user(0)
    first_seq: int
    last_seq: int
    batch_tag: str = ""  # the pre-created rows a consuming run uses: uid(batch_tag, k)
    board_size: int = 0  # users on the all-time leaderboard: see board_entry()
    board_rank: int = 0  # ListLeaderboard pages start after this rank (0: the first page)


class Requests:
    """Builds the call number `k` of a scenario: (calling user id, request message)."""

    def __init__(self, scenario: str, data: Data, page_secret: bytes, seed: int) -> None:
        self._build: Callable[[int], tuple[str, Any]] = getattr(self, "_" + scenario)  # _GetSession, ...
        self._data = data
        self._tokens = PageTokens(page_secret)
        self._random = random.Random(seed)
        self._users = users_of(data.set_size)

    def __call__(self, k: int) -> tuple[str, Any]:
        return self._build(k)

    def _read_set_session(self, active_only: bool) -> tuple[str, str]:
        size = self._data.set_size
        i = self._random.randrange(size)
        if active_only and i % 3 == 0:  # the seeding completes every third session
            i = i + 1 if i + 1 < size else i - 1
        return uid(self._data.set_tag + "u", i % self._users), uid(self._data.set_tag, i)

    def _GetSession(self, k: int) -> tuple[str, Any]:
        caller, session_id = self._read_set_session(False)
        return caller, pb.GetSessionRequest(session_id=session_id)

    def _ListSessions(self, k: int) -> tuple[str, Any]:
        caller = uid(self._data.set_tag + "u", self._random.randrange(self._users))
        return caller, pb.ListSessionsRequest(page_size=50)

    def _ListMessages(self, k: int) -> tuple[str, Any]:
        caller, session_id = hot_user(0), self._data.conversation
        # A page somewhere in the conversation, as a client paging through it would ask.
        after = self._random.randrange(
            self._data.first_seq, max(self._data.first_seq + 1, self._data.last_seq - 50)
        )
        token = self._tokens.encode(f"messages:{caller}:{session_id}", [after])
        return caller, pb.ListMessagesRequest(session_id=session_id, page_size=50, page_token=token)

    def _CreateSession(self, k: int) -> tuple[str, Any]:
        caller = hot_user(self._random.randrange(HOT_USERS))
        return caller, pb.CreateSessionRequest(job_posting_id=str(uuid.uuid4()))

    def _AppendMessage(self, k: int) -> tuple[str, Any]:
        caller, session_id = self._read_set_session(True)
        request = pb.AppendMessageRequest(
            session_id=session_id, role=pb.MESSAGE_ROLE_QUESTION, content=CONTENT
        )
        return caller, request

    def _CompleteSession(self, k: int) -> tuple[str, Any]:
        return hot_user(k), pb.CompleteSessionRequest(session_id=uid(self._data.batch_tag, k))

    def _RetakeSession(self, k: int) -> tuple[str, Any]:
        return hot_user(k), pb.RetakeSessionRequest(session_id=uid(self._data.batch_tag, k))

    def _ListLeaderboard(self, k: int) -> tuple[str, Any]:
        caller = hot_user(self._random.randrange(HOT_USERS))
        token = ""
        if self._data.board_rank:
            score, user = board_entry(self._data.board_size, self._data.board_rank)
            token = self._tokens.encode(f"leaderboard:{caller}:all", [0, self._data.board_rank, score, user])
        return caller, rpb.ListLeaderboardRequest(
            period=rpb.LEADERBOARD_PERIOD_ALL_TIME, page_size=50, page_token=token
        )

    def _ConfirmCompletion(self, k: int) -> tuple[str, Any]:
        # Calls 2j and 2j+1 are the owner's and the partner's confirmations of paired session j.
        pair = k // 2
        caller = hot_user(pair) if k % 2 == 0 else hot_user(pair + 1)
        return caller, rpb.ConfirmCompletionRequest(session_id=uid(self._data.batch_tag, pair))


def batch_rows(scenario: str, calls: int) -> int:
    """How many rows a consuming run of `calls` calls needs pre-created."""
    return (calls + 1) // 2 if scenario == "ConfirmCompletion" else calls
