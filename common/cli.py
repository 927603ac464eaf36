"""A service's command line: `serve` (default, in one or more worker processes), `migrate`, and
any commands of the service's own; signals stop it gracefully; a bad setting prints one line
naming its variable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

from common import tracing
from common.app import AppServer, ListenError
from common.config import ConfigError, database_url
from common.logs import configure_logging
from common.migrations import migrate

log = logging.getLogger("rpc")
# A service's own command: its arguments and the environment in, the exit status out. It reads
# only the settings it needs; a ConfigError it raises is printed like any other (exit 2).
Command = Callable[[list[str], Mapping[str, str]], int]


async def serve_until_signal(app: AppServer) -> None:
    """Runs `app` until SIGTERM or SIGINT, then stops it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await app.start()
    log.info(
        {
            "event": "listening",
            "port": app.port,
            "metrics_port": app.metrics_port,
            "services": app.service_names,
        }
    )
    await stop.wait()
    log.info({"event": "stopping"})
    await app.stop()


def main(
    package: str,
    database_variable: str,
    load: Callable[[Mapping[str, str]], Any],
    create: Callable[[Any], AppServer],
    argv: list[str],
    commands: Mapping[str, Command] | None = None,
) -> int:
    """A service's command line: `serve` (default), `migrate` or one of `commands`; bad
    settings print one line."""
    commands = commands or {}
    command = argv[0] if argv else "serve"
    if command not in ("serve", "migrate", *commands):
        print(f"usage: python -m {package} [{'|'.join(('serve', 'migrate', *commands))}]", file=sys.stderr)
        return 2
    try:
        if command in commands:
            return commands[command](argv[1:], os.environ)
        if command == "migrate":
            url = database_url(os.environ, database_variable)
            configure_logging()
            asyncio.run(migrate(url, package))
            return 0
        settings = load(os.environ)
        workers = settings.workers
        traced = tracing.wanted(os.environ)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    configure_logging()

    async def serve() -> None:
        # The grpc.aio server must be created inside the running event loop.
        await serve_until_signal(create(settings))

    def run() -> int:
        # Per process, after the fork: the exporter's channel and batch thread would not survive it.
        # Leaving the block flushes the spans still held, so a stopped worker loses none.
        # Spans name the service (session-service, reputation-service) unless OTEL_* say otherwise.
        service_name = package.replace("_", "-")
        exporting = tracing.installed(tracing.otlp_provider(service_name)) if traced else None
        try:
            with exporting or contextlib.nullcontext():
                asyncio.run(serve())
        except ListenError as error:
            print(f"{package}: {error}", file=sys.stderr)
            return 1
        return 0

    # Workers are forked before any event loop or gRPC object exists (gRPC does not survive a
    # fork); each then serves on the shared port and the kernel spreads connections among them.
    children = []
    for _ in range(workers - 1):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = run()
            except Exception:
                log.exception({"event": "worker_failed"})
            finally:
                sys.stderr.flush()
                os._exit(code)
        children.append(pid)
    code = run()
    # This process served until SIGTERM/SIGINT (or could not start): the workers stop with it.
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in children:
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            code = code or 1
    return code
