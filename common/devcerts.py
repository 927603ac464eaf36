"""Development and test certificates: a private CA and leaf certificates signed by it, written
0600 from creation. Production certificates come from the operator; these never leave DATA_DIR.

python -m common.devcerts DIR HOST [HOST ...]   writes ca.pem, server.pem/.key, client.pem/.key
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


def write_private(path: Path, data: bytes) -> None:
    """Writes `data` to a new file that is 0600 from its creation (no moment at 0644)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: PrivateKeyTypes) -> bytes:
    """A private key as unencrypted PKCS#8 PEM (for files written with `write_private`)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


@dataclass(frozen=True)
class DevCertificates:
    """Paths of a CA and of a server and a client certificate it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def write_dev_certificates(
    directory: Path, hosts: list[str], ca_name: str = "interview dev CA"
) -> DevCertificates:
    """A new CA in `directory`, a server certificate for `hosts` (usable as a client certificate
    too, for mutual TLS between services) and a client certificate for people and tests.
    Files that already exist are kept (the set is made once per directory)."""
    paths = DevCertificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    if paths.client_key.exists():
        return paths
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(common_name: str, names: list[str], usages: list[x509.ObjectIdentifier]) -> tuple[bytes, bytes]:
        key = _key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), private_pem(key)

    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server_cert, server_key = leaf(hosts[0], hosts, both)
    client_cert, client_key = leaf("interview dev client", [], [ExtendedKeyUsageOID.CLIENT_AUTH])
    directory.mkdir(parents=True, exist_ok=True)
    # The CA's key is not kept: every certificate it signs is made here, now.
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert)
    write_private(paths.server_key, server_key)
    paths.client_cert.write_bytes(client_cert)
    write_private(paths.client_key, client_key)
    return paths


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m common.devcerts DIR HOST [HOST ...]", file=sys.stderr)
        return 2
    write_dev_certificates(Path(argv[0]), argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
