"""Start-up: `python -m session_service [serve|migrate]`."""

import sys

from common.cli import main
from session_service.api import create_server
from session_service.config import load

if __name__ == "__main__":
    sys.exit(main("session_service", "SESSION_DATABASE_URL", load, create_server, sys.argv[1:]))
