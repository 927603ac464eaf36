"""`python -m reputation_service replay-outbox [--session ID]`: the operator's way back for outbox
rows the session service refused for good (parked as dead by the relay), once the cause is fixed."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Mapping

import asyncpg

from common.config import database_url
from reputation_service import store


def _session_id(value: str) -> str:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a session id: {value!r}") from None
    return str(parsed)


async def _replay(url: str, session_id: str | None) -> tuple[list[str], asyncpg.Record | None]:
    """The replayed rows' session ids and, when `session_id` was not among them, its outbox row."""
    # A one-shot connection, without the prepared-statement cache (PgBouncer may sit in front).
    conn = await asyncpg.connect(url, timeout=10, statement_cache_size=0)
    try:
        replayed = await store.replay(conn, session_id)
        row = None if replayed or session_id is None else await store.outbox_row(conn, session_id)
    finally:
        await conn.close()
    return replayed, row


def replay_command(argv: list[str], env: Mapping[str, str]) -> int:
    """`replay-outbox [--session ID]`: makes dead outbox rows (all, or that session's) due again,
    with their attempts counted from 0; the relays deliver them at their next pass."""
    parser = argparse.ArgumentParser(
        prog="python -m reputation_service replay-outbox",
        description="Make outbox rows the session service refused due again (fix the cause first).",
    )
    parser.add_argument("--session", type=_session_id, help="only this session's row")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse printed why (or the help)
        return exit_.code if isinstance(exit_.code, int) else 2
    url = "postgresql://" + database_url(env, "REPUTATION_DATABASE_URL").split("://", 1)[1]
    try:
        replayed, row = asyncio.run(_replay(url, args.session))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        print(f"replay-outbox: the database did not answer: {error}", file=sys.stderr)
        return 1
    if args.session is not None and not replayed:
        if row is None:
            why = "this service holds no completion for it"
        elif row["deliver_time"] is not None:
            why = "its completion was already delivered"
        else:
            why = "its row is not dead: the relay is still retrying it"
        print(f"replay-outbox: no dead outbox row for session {args.session}: {why}", file=sys.stderr)
        return 1
    print(f"replay-outbox: {len(replayed)} dead outbox row(s) due again")
    return 0
