"""Seeding in SQL (INSERT ... SELECT generate_series), never through the RPCs: ids follow
workloads.uid, so the load processes can name any seeded row without being told."""

from __future__ import annotations

import time

import asyncpg

from bench.workloads import HOT_USERS, Data, hot_user, sql_uid, uid, users_of

# One session in ten gets a question and its answer, so the messages table grows with the sessions.
_READ_SET = """
INSERT INTO sessions.sessions (session_id, user_id, partner_user_id, job_posting_id, status,
                               current_question_number, create_time, update_time, complete_time)
SELECT {session}, {owner},
       CASE WHEN i % 4 = 0 THEN {partner} END,
       {job}, CASE WHEN i % 3 = 0 THEN 'completed' ELSE 'active' END,
       CASE WHEN i % 10 = 1 THEN 1 ELSE 0 END,
       t, t, CASE WHEN i % 3 = 0 THEN t END
  FROM generate_series($1::bigint, $2::bigint - 1) AS i,
       LATERAL (SELECT now() - make_interval(secs => i::double precision / 10) AS t) AS moment
"""
_READ_SET_MESSAGES = """
INSERT INTO sessions.messages (message_id, session_id, author_user_id, role, content, question_number)
SELECT {message}, {session}, {owner},
       CASE WHEN r = 0 THEN 'question' ELSE 'answer' END, 'seeded message', 1
  FROM generate_series($1::bigint + 1, $2::bigint - 1, 10) AS i, generate_series(0, 1) AS r
"""
_CONVERSATION = """
INSERT INTO sessions.sessions (session_id, user_id, job_posting_id, status, current_question_number)
VALUES ($1, $2, $3, 'active', ($4::int + 1) / 2)
"""
_CONVERSATION_MESSAGES = """
INSERT INTO sessions.messages (message_id, session_id, author_user_id, role, content, question_number)
SELECT {message}, $1, $2, CASE WHEN r % 2 = 0 THEN 'question' ELSE 'answer' END,
       'message number ' || r, r / 2 + 1
  FROM generate_series(0, $3::int - 1) AS r ORDER BY r
"""
_CONVERSATION_SEQS = "SELECT min(seq), max(seq) FROM sessions.messages WHERE session_id = $1"
# Rows each consuming scenario needs, one per call (a pair of calls for ConfirmCompletion):
# solo active sessions to complete, solo completed ones to retake, paired active ones to confirm.
_BATCH = """
INSERT INTO sessions.sessions (session_id, user_id, partner_user_id, job_posting_id, status, complete_time)
SELECT {session}, {owner}, {partner}, {job}, '{status}', {complete_time}
  FROM generate_series(0, $1::bigint - 1) AS i
"""
_BOARD = f"""
INSERT INTO reputation.leaderboard (kind, period_start, user_id, score)
SELECT 'all', date '1970-01-01', {sql_uid("board", "i")}, $1::bigint - i
  FROM generate_series(0, $1::bigint - 1) AS i
"""
_BATCH_KINDS = {
    "CompleteSession": ("NULL", "active", "NULL"),
    "RetakeSession": ("NULL", "completed", "now()"),
    "ConfirmCompletion": (sql_uid("hot", f"(i + 1) % {HOT_USERS}"), "active", "NULL"),
}


async def read_set(conn: asyncpg.Connection, tag: str, size: int, chunk: int = 200_000) -> None:
    """`size` sessions owned by users_of(size) users (about 100 each, a quarter of them paired),
    a third completed, spread over time; in chunks so no one statement holds everything."""
    users = users_of(size)
    owner = sql_uid(tag + "u", f"i % {users}")
    sessions = _READ_SET.format(
        session=sql_uid(tag, "i"),
        owner=owner,
        partner=sql_uid(tag + "u", f"(i + 1) % {users}"),
        job=sql_uid("job", "i % 1000"),
    )
    messages = _READ_SET_MESSAGES.format(
        message=sql_uid(tag + "m", "i * 2 + r"), session=sql_uid(tag, "i"), owner=owner
    )
    for start in range(0, size, chunk):
        end = min(size, start + chunk)
        async with conn.transaction():
            await conn.execute(sessions, start, end)
            await conn.execute(messages, start, end)


async def conversation(
    conn: asyncpg.Connection, session_id: str, owner: str, messages: int
) -> tuple[int, int]:
    """One active session with `messages` alternating questions and answers; its first and last seq."""
    async with conn.transaction():
        await conn.execute(_CONVERSATION, session_id, owner, uid("job", 0), messages)
        sql = _CONVERSATION_MESSAGES.format(message=sql_uid("conv-message", "r"))
        await conn.execute(sql, session_id, owner, messages)
    first, last = await conn.fetchrow(_CONVERSATION_SEQS, session_id)
    return int(first), int(last)


async def batch(conn: asyncpg.Connection, scenario: str, tag: str, rows: int) -> None:
    """`rows` fresh sessions uid(tag, i) owned by hot users, in the state `scenario` acts on."""
    partner, status, complete_time = _BATCH_KINDS[scenario]
    sql = _BATCH.format(
        session=sql_uid(tag, "i"),
        owner=sql_uid("hot", f"i % {HOT_USERS}"),
        partner=partner,
        job=sql_uid("job", "i % 1000"),
        status=status,
        complete_time=complete_time,
    )
    await conn.execute(sql, rows)


async def analyze(conn: asyncpg.Connection) -> None:
    """Fresh statistics and visibility maps, as a table that has been live for a while would have,
    and a checkpoint, so the seeded gigabytes are not still being flushed while a case is measured."""
    for table in ("sessions.sessions", "sessions.messages"):
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    try:
        await conn.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass  # a database given by URL may not let us; its own checkpoints then run as they will


async def row_counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {
        "sessions": int(await conn.fetchval("SELECT count(*) FROM sessions.sessions")),
        "messages": int(await conn.fetchval("SELECT count(*) FROM sessions.messages")),
    }


async def board(dsn: str, size: int) -> None:
    """The all-time leaderboard with `size` users, as workloads.board_entry describes it, analyzed."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(_BOARD, size)
        await conn.execute("ANALYZE reputation.leaderboard")
    finally:
        await conn.close()


async def seed_set(dsn: str, tag: str, size: int, messages: int = 0) -> tuple[Data, dict[str, int], float]:
    """A read set (and the conversation of `messages`, if any) on a connection of its own: where it is,
    the table's row counts, and the seconds the inserts took (statistics not included)."""
    conn = await asyncpg.connect(dsn)
    try:
        began = time.monotonic()
        await read_set(conn, tag, size)
        first = last = 0
        if messages:
            first, last = await conversation(conn, uid("conv", 0), hot_user(0), messages)
        seconds = time.monotonic() - began
        await analyze(conn)
        data = Data(set_tag=tag, set_size=size, conversation=uid("conv", 0), first_seq=first, last_seq=last)
        return data, await row_counts(conn), seconds
    finally:
        await conn.close()
