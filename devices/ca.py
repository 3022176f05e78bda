"""Flowbill's device CA: certificates for devices (and the local broker), and the CRL.

The CA store is a folder holding `ca.pem` (the certificate, given to the broker and to
devices) and `ca.key` (the private key, mode 0600, read only by the processes that issue).
The key is never sent anywhere: a device either sends a CSR, or gets a key pair made for it
here and shown once. Device certificates name the ICCID as subject CN (the broker's user
name) and as a `urn:iccid:` URI in the SAN; keys are ECDSA P-256.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devices.errors import CaUnavailable, InvalidCsr

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_YEARS = 10
_BACKDATE = timedelta(minutes=5)  # devices with a clock a little behind still accept it


@dataclass(frozen=True)
class IssuedCertificate:
    certificate_pem: str
    serial: str  # hex, as the CRL and `openssl x509 -serial` name it
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    private_key_pem: str | None = None  # only when the key pair was made here


@dataclass(frozen=True)
class RevokedSerial:
    serial: str
    revoked_at: datetime


def _write_private(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class DeviceCa:
    """A loaded CA: its certificate and key."""

    def __init__(self, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.certificate = certificate
        self._key = key

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @classmethod
    def load(cls, directory: str | Path) -> DeviceCa:
        """The CA kept in this store; CaUnavailable when it has none."""
        folder = Path(directory)
        try:
            certificate = x509.load_pem_x509_certificate((folder / CA_CERT_FILE).read_bytes())
            key = serialization.load_pem_private_key(
                (folder / CA_KEY_FILE).read_bytes(), password=None
            )
        except (OSError, ValueError) as exc:
            raise CaUnavailable(f"no device CA in {folder}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CaUnavailable("the device CA key is not an EC key")
        return cls(certificate, key)

    @classmethod
    def create(cls, directory: str | Path, *, now: datetime, name: str) -> DeviceCa:
        """A new CA in this store (files 0600); refuses to replace one."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True, mode=0o711)
        if (folder / CA_KEY_FILE).exists():
            raise FileExistsError(f"{folder / CA_KEY_FILE} exists")
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(folder / CA_KEY_FILE, _key_pem(key).encode())
        # The certificate is public: the broker (another user) and devices read it.
        cert = certificate.public_bytes(serialization.Encoding.PEM)
        _write_private(folder / CA_CERT_FILE, cert, mode=0o644)
        return cls(certificate, key)

    @classmethod
    def load_or_create(cls, directory: str | Path, *, now: datetime, name: str) -> DeviceCa:
        if (Path(directory) / CA_KEY_FILE).exists():
            return cls.load(directory)
        return cls.create(directory, now=now, name=name)

    def _builder(
        self, public_key: ec.EllipticCurvePublicKey, common_name: str, *, now: datetime, days: int
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )

    def issue(
        self, iccid: str, public_key: ec.EllipticCurvePublicKey, *, now: datetime, days: int
    ) -> IssuedCertificate:
        """A device certificate for this ICCID and public key."""
        certificate = (
            self._builder(public_key, iccid, now=now, days=days)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:iccid:{iccid}")]),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(self._key, hashes.SHA256())
        )
        return IssuedCertificate(
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            serial=format(certificate.serial_number, "x"),
            fingerprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
            not_before=certificate.not_valid_before_utc,
            not_after=certificate.not_valid_after_utc,
        )

    def issue_from_csr(
        self, iccid: str, csr_pem: str, *, now: datetime, days: int
    ) -> IssuedCertificate:
        """A device certificate for the key of a CSR (P-256, signed by that key). The CSR's
        subject is ignored: the certificate names the ICCID it is issued for."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            signed = csr.is_signature_valid
        except (ValueError, InvalidSignature) as exc:
            raise InvalidCsr("`csr` is not a PEM certificate signing request") from exc
        if not signed:
            raise InvalidCsr("the CSR is not signed by its own key")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise InvalidCsr("the CSR's key must be ECDSA P-256")
        return self.issue(iccid, public_key, now=now, days=days)

    def issue_with_new_key(self, iccid: str, *, now: datetime, days: int) -> IssuedCertificate:
        """A key pair made for the device and its certificate; the key is in the answer only."""
        key = ec.generate_private_key(ec.SECP256R1())
        issued = self.issue(iccid, key.public_key(), now=now, days=days)
        return IssuedCertificate(**{**issued.__dict__, "private_key_pem": _key_pem(key)})

    def server_certificate(
        self, hosts: Sequence[str], *, now: datetime, days: int
    ) -> tuple[str, str]:
        """A TLS server certificate and key for the broker, naming these hosts (DNS names or
        IP addresses)."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        certificate = (
            self._builder(key.public_key(), hosts[0], now=now, days=days)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(self._key, hashes.SHA256())
        )
        return certificate.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key)

    def crl(
        self, revoked: Sequence[RevokedSerial], *, now: datetime, valid_for: timedelta
    ) -> bytes:
        """The CRL (PEM) listing these serials, valid until now + valid_for."""
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + valid_for)
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry.serial, 16))
                .revocation_date(entry.revoked_at)
                .build()
            )
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
