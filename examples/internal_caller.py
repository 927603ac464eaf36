"""An internal caller of both services: a paired session, confirmed by both users, then reputation.

    ALICE_TOKEN=$(make -s token USER=$ALICE) BOB_TOKEN=$(make -s token USER=$BOB) \\
      .venv/bin/python -m examples.internal_caller $BOB $JOB_POSTING_ID

It imports only the typed clients and the generated code, so it also runs as a script from an
environment that has just the client distribution (`pip install ./clients`, see the README).
SESSION_SERVICE_TARGET and REPUTATION_TARGET override the `make run` addresses.
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
from interview.sessions.v1 import sessions_pb2

from common.client import TokenProvider, error_reason
from reputation_service.client import ReputationClient
from session_service.client import SessionClient


def env_token(name: str) -> TokenProvider:
    """Reads the token on every call, so whoever refreshes the variable refreshes the caller."""
    return lambda: os.environ[name]


async def run(session_target: str, reputation_target: str, bob_user_id: str, job_posting_id: str) -> None:
    alice, bob = env_token("ALICE_TOKEN"), env_token("BOB_TOKEN")
    async with (
        SessionClient.connect(session_target, alice) as alice_sessions,
        ReputationClient.connect(reputation_target, alice) as alice_reputation,
        ReputationClient.connect(reputation_target, bob) as bob_reputation,
    ):
        session = await alice_sessions.create_session(job_posting_id, partner_user_id=bob_user_id)
        print(f"created paired session {session.session_id}")
        await alice_reputation.confirm_completion(session.session_id)
        confirmation = await bob_reputation.confirm_completion(session.session_id)
        status = sessions_pb2.SessionStatus.Name(confirmation.session_status)
        print(f"both confirmed: {confirmation.both_confirmed}, session {status}")
        reputation = await bob_reputation.get_reputation()
        print(f"bob's reputation: {reputation.score} from {reputation.confirmed_sessions} sessions")
        try:
            await alice_sessions.complete_session(session.session_id)
        except grpc.RpcError as error:
            print(f"completing it without the confirmations: {error_reason(error)}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m examples.internal_caller BOB_USER_ID JOB_POSTING_ID", file=sys.stderr)
        return 2
    session_target = os.environ.get("SESSION_SERVICE_TARGET", "127.0.0.1:50051")
    reputation_target = os.environ.get("REPUTATION_TARGET", "127.0.0.1:50052")
    bob_user_id, job_posting_id = argv
    asyncio.run(run(session_target, reputation_target, bob_user_id, job_posting_id))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
