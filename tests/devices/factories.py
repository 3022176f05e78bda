"""Device credentials for tests: SIMs provisioned with an owner, CSRs, TLS clients."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import bearer, new_iccid


async def provisioned(
    http: httpx.AsyncClient, operator_key: str, *, owner_id: str | None = None, count: int = 1
) -> list[str]:
    iccids = [new_iccid() for _ in range(count)]
    body: dict[str, object] = {"iccids": iccids}
    if owner_id is not None:
        body["owner_id"] = owner_id
    answer = await http.post("/v1/operator/sims", json=body, headers=bearer(operator_key))
    assert answer.status_code == 200, answer.text
    return iccids


def csr_for(name: str = "anything") -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A P-256 key and a CSR for it, made on the 'device'."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip


def tls_context(
    ca_file: str, folder: Path, *, certificate_pem: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A device's TLS context: trusts the broker's CA, presents its certificate if given."""
    context = ssl.create_default_context(cafile=ca_file)
    if certificate_pem is not None and key is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "device.pem").write_text(certificate_pem)
        (folder / "device.key").write_text(key)
        context.load_cert_chain(folder / "device.pem", folder / "device.key")
    return context
