"""Start-up: `python -m reputation_service [serve|migrate|replay-outbox [--session ID]]`."""

import sys

from common.cli import main
from reputation_service.api import create_server
from reputation_service.config import load
from reputation_service.replay import replay_command

if __name__ == "__main__":
    sys.exit(
        main(
            "reputation_service",
            "REPUTATION_DATABASE_URL",
            load,
            create_server,
            sys.argv[1:],
            {"replay-outbox": replay_command},
        )
    )
