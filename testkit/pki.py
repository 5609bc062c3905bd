"""A throwaway CA and a server certificate for a harness's TLS listener (API server, Kafka);
`issue` signs more certificates with that CA (a node's kubelet and kube-proxy, say)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PEM = serialization.Encoding.PEM


@dataclass(frozen=True)
class ServerPki:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes  # unencrypted PKCS#8
    ca_key_pem: bytes = b""  # the CA's own key (PKCS#8), for `issue`

    def write(self, folder: Path, ca: str, cert: str, key: str, ca_key: str | None = None) -> None:
        (folder / ca).write_bytes(self.ca_pem)
        (folder / cert).write_bytes(self.cert_pem)
        (folder / key).write_bytes(self.key_pem)
        (folder / key).chmod(0o600)
        if ca_key:
            (folder / ca_key).write_bytes(self.ca_key_pem)
            (folder / ca_key).chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def server_pki(
    ca_name: str, server_name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 7
) -> ServerPki:
    """A new CA and a certificate it signs for `hosts` (IP addresses or DNS names)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    usage = {
        name: False
        for name in (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        )
    }
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ca_name))
        .issuer_name(_name(ca_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **usage), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(PEM)
    ca_key_pem = ca_key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert_pem, key_pem = issue(ca_pem, ca_key_pem, server_name, hosts=hosts, days=days)
    return ServerPki(ca_pem, cert_pem, key_pem, ca_key_pem)


def issue(
    ca_pem: bytes,
    ca_key_pem: bytes,
    common_name: str,
    organizations: tuple[str, ...] = (),
    hosts: tuple[str, ...] = (),
    client: bool = False,
    days: int = 7,
) -> tuple[bytes, bytes]:
    """(certificate, PKCS#8 key) signed by the CA: a server certificate for `hosts`, or with
    `client` a client one (Kubernetes reads the user from the CN, its groups from O)."""
    now = dt.datetime.now(dt.UTC)
    ca = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(PEM), key_pem
