"""Key material made by the project itself, every secret file 0600 from creation: each
token-minting service's key pair and the JWK Set of their public halves, and a private CA with
certificates (common.devcerts). `make run` makes a development set in DATA_DIR; a deployment's
one-shot step makes its set in a volume:

python -m common.keygen DIR --services reputation [--hosts session,reputation]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from common.auth.signing import load_private_key, public_jwk
from common.devcerts import private_pem, write_dev_certificates, write_private

SERVICE_JWKS = "service-jwks.json"
TLS_DIR = "tls"


def made_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """The file's content, made by `make` and written 0600 the first time."""
    try:
        write_private(path, make())
    except FileExistsError:
        pass
    return path.read_bytes()


def service_key_file(directory: Path, kid: str) -> Path:
    return directory / f"service-{kid}.pem"


def service_keys(directory: Path, kids: list[str]) -> Path:
    """An Ed25519 key pair per kid (made once) and the JWK Set of their public halves; returns the
    JWK Set's path."""
    jwks = {
        "keys": [
            public_jwk(
                load_private_key(
                    made_once(
                        service_key_file(directory, kid),
                        lambda: private_pem(ed25519.Ed25519PrivateKey.generate()),
                    )
                ),
                kid,
            )
            for kid in kids
        ]
    }
    path = directory / SERVICE_JWKS
    made_once(path, lambda: json.dumps(jwks, indent=2).encode())
    return path


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.keygen", description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--services", required=True, help="comma-separated names that mint service tokens")
    parser.add_argument("--hosts", default="", help="comma-separated names for a server certificate")
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    service_keys(args.directory, [name for name in args.services.split(",") if name])
    hosts = [name for name in args.hosts.split(",") if name]
    if hosts:
        write_dev_certificates(args.directory / TLS_DIR, [*hosts, "localhost", "127.0.0.1"])
    print(f"key material in {args.directory}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
