"""Start-up: `python -m session_service [serve|migrate]`."""

from __future__ import annotations

import asyncio
import os
import sys

from common.config import ConfigError, database_url
from common.db import migrate
from common.server import configure_logging, serve_until_signal
from session_service import config
from session_service.api import create_server


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "serve"
    if command not in ("serve", "migrate"):
        print("usage: python -m session_service [serve|migrate]", file=sys.stderr)
        return 2
    configure_logging()
    try:
        if command == "migrate":
            asyncio.run(migrate(database_url(os.environ, "SESSION_DATABASE_URL"), "session_service"))
            return 0
        settings = config.load(os.environ)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    asyncio.run(serve(settings))
    return 0


async def serve(settings: config.Config) -> None:
    # The grpc.aio server must be created inside the running event loop.
    await serve_until_signal(create_server(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
