"""Issuing, rotating and revoking device credentials over the API (the attacks are in
tests/security/test_device_identity.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from devices import passwords
from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant, new_iccid
from tests.devices.factories import csr_for, provisioned
from tests.iot_cards.factories import Store, block_prefix, new_card


def _certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


async def _rows(conn: psycopg.AsyncConnection, iccid: str) -> list[tuple[object, ...]]:
    cur = await conn.execute(
        "SELECT * FROM device_credentials WHERE iccid = %s ORDER BY credential_id", (iccid,)
    )
    return list(await cur.fetchall())


async def test_a_password_is_shown_once_and_kept_only_as_the_brokers_hash(
    http: httpx.AsyncClient, operator_key: str, committed_conn: psycopg.AsyncConnection
) -> None:
    (iccid,) = await provisioned(http, operator_key)
    path = f"/v1/operator/sims/{iccid}/device-credentials"
    answer = await http.post(path, json={"kind": "password"}, headers=bearer(operator_key))
    assert answer.status_code == 201, answer.text
    issued = answer.json()
    assert issued["username"] == iccid
    secret = issued["password"]
    assert len(secret) >= 43  # 256 bits, URL-safe base64
    (row,) = await _rows(committed_conn, iccid)
    assert secret not in repr(row)
    cur = await committed_conn.execute(
        "SELECT password_hash FROM device_credentials WHERE iccid = %s", (iccid,)
    )
    (stored,) = await cur.fetchone()  # type: ignore[misc]
    assert stored.startswith("$7$101$")
    assert passwords.verify(secret, stored)
    assert not passwords.verify(secret + "x", stored)
    # Nothing shows it again.
    listed = await http.get(path, headers=bearer(operator_key))
    assert listed.status_code == 200
    assert secret not in listed.text
    assert [c["kind"] for c in listed.json()] == ["password"]


async def test_a_certificate_for_a_csr_names_the_iccid_and_chains_to_the_device_ca(
    http: httpx.AsyncClient, operator_key: str, settings: Settings
) -> None:
    (iccid,) = await provisioned(http, operator_key)
    csr, key = csr_for("a name the device chose")
    answer = await http.post(
        f"/v1/operator/sims/{iccid}/device-credentials",
        json={"kind": "certificate", "csr": csr},
        headers=bearer(operator_key),
    )
    assert answer.status_code == 201, answer.text
    issued = answer.json()
    assert issued["private_key_pem"] is None
    cert = x509.load_pem_x509_certificate(issued["certificate_pem"].encode())
    ca = x509.load_pem_x509_certificate(issued["ca_certificate_pem"].encode())
    assert settings.device_ca_file is not None
    assert _certificate(Path(settings.device_ca_file)) == ca
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == iccid
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [f"urn:iccid:{iccid}"]
    assert cert.public_key() == key.public_key()
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert isinstance(public.curve, ec.SECP256R1)
    days = (cert.not_valid_after_utc - datetime.now(UTC)).days
    assert settings.device_certificate_days - 1 <= days <= settings.device_certificate_days
    assert format(cert.serial_number, "x") == issued["serial"]


async def test_without_a_csr_a_key_pair_is_made_and_returned_once(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    (iccid,) = await provisioned(http, operator_key)
    answer = await http.post(
        f"/v1/operator/sims/{iccid}/device-credentials",
        json={"kind": "certificate"},
        headers=bearer(operator_key),
    )
    assert answer.status_code == 201, answer.text
    issued = answer.json()
    assert "PRIVATE KEY" in issued["private_key_pem"]
    listed = await http.get(
        f"/v1/operator/sims/{iccid}/device-credentials", headers=bearer(operator_key)
    )
    assert "PRIVATE KEY" not in listed.text


async def test_bad_csrs_are_refused_and_nothing_is_issued(
    http: httpx.AsyncClient, operator_key: str, committed_conn: psycopg.AsyncConnection
) -> None:
    (iccid,) = await provisioned(http, operator_key)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, iccid)]))
        .sign(rsa_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    for csr in ("not a csr", rsa_csr):
        answer = await http.post(
            f"/v1/operator/sims/{iccid}/device-credentials",
            json={"kind": "certificate", "csr": csr},
            headers=bearer(operator_key),
        )
        assert_problem(answer, 422, "invalid-csr")
    assert await _rows(committed_conn, iccid) == []
    assert_problem(
        await http.post(
            f"/v1/operator/sims/{new_iccid()}/device-credentials",
            json={"kind": "password"},
            headers=bearer(operator_key),
        ),
        404,
        "sim-not-found",
    )


async def test_issue_once_then_rotate_with_an_overlap_then_revoke(
    http: httpx.AsyncClient, operator_key: str, settings: Settings
) -> None:
    (iccid,) = await provisioned(http, operator_key)
    path = f"/v1/operator/sims/{iccid}/device-credentials"
    operator = bearer(operator_key)
    first = await http.post(path, json={"kind": "certificate"}, headers=operator)
    assert first.status_code == 201
    assert_problem(
        await http.post(path, json={"kind": "certificate"}, headers=operator),
        409,
        "device-credential-exists",
    )
    before = datetime.now(UTC)
    rotated = await http.post(f"{path}/rotate", json={"kind": "certificate"}, headers=operator)
    assert rotated.status_code == 201, rotated.text
    until = datetime.fromisoformat(rotated.json()["previous_valid_until"])
    overlap = timedelta(hours=settings.device_rotation_overlap_hours)
    assert before + overlap <= until <= datetime.now(UTC) + overlap
    assert rotated.json()["serial"] != first.json()["serial"]
    # Rotating to a password ends the certificate's successor after its own overlap too.
    to_password = await http.post(f"{path}/rotate", json={"kind": "password"}, headers=operator)
    assert to_password.status_code == 201
    again = await http.post(f"{path}/rotate", json={"kind": "password"}, headers=operator)
    # A password is replaced at once: the broker holds one password per user name.
    assert datetime.fromisoformat(again.json()["previous_valid_until"]) <= datetime.now(UTC)
    revoked = await http.delete(path, headers=operator)
    assert revoked.status_code == 200, revoked.text
    # The current password and both certificates still in their overlap.
    assert sorted(c["kind"] for c in revoked.json()) == ["certificate", "certificate", "password"]
    assert all(c["revoked_at"] for c in revoked.json())
    assert_problem(await http.delete(path, headers=operator), 404, "device-credential-not-found")
    assert_problem(
        await http.post(f"{path}/rotate", json={"kind": "password"}, headers=operator),
        404,
        "device-credential-not-found",
    )
    # After a revocation the SIM may be given a new credential.
    assert (await http.post(path, json={"kind": "password"}, headers=operator)).status_code == 201


async def test_provisioning_issues_credentials_once_in_the_same_transaction(
    http: httpx.AsyncClient, operator_key: str, settings: Settings
) -> None:
    automaker_id, automaker_key = await make_tenant(settings, role=Role.SPONSOR)
    iccids = [new_iccid() for _ in range(3)]
    body = {"iccids": iccids, "owner_id": automaker_id}
    first = await http.post(
        "/v1/operator/sims",
        params={"device_credentials": "certificate"},
        json=body,
        headers=bearer(operator_key),
    )
    assert first.status_code == 200, first.text
    issued = first.json()["device_credentials"]
    assert sorted(c["iccid"] for c in issued) == sorted(iccids)
    assert all("PRIVATE KEY" in c["private_key_pem"] for c in issued)
    again = await http.post(
        "/v1/operator/sims",
        params={"device_credentials": "password"},
        json=body,
        headers=bearer(operator_key),
    )
    assert again.status_code == 200
    assert again.json()["device_credentials"] == []
    # The owner manages its SIMs' credentials itself.
    mine = await http.get(
        f"/v1/sponsor/sims/{iccids[0]}/device-credentials", headers=bearer(automaker_key)
    )
    assert mine.status_code == 200, mine.text
    assert [c["kind"] for c in mine.json()] == ["certificate"]
    rotated = await http.post(
        f"/v1/sponsor/sims/{iccids[0]}/device-credentials/rotate",
        json={"kind": "password"},
        headers=bearer(automaker_key),
    )
    assert rotated.status_code == 201, rotated.text


async def test_a_card_import_issues_identities_and_the_holding_merchant_manages_them(
    http: httpx.AsyncClient, operator_key: str, settings: Settings
) -> None:
    store = await Store(http, settings, operator_key).open(cards=0)
    prefix = block_prefix()
    cards = [new_card(prefix, n) for n in range(3)]
    text = "iccid,imsi,msisdn\n" + "".join(f"{a},{b},{c}\n" for a, b, c in cards)
    imported = await http.post(
        "/v1/operator/iot/card-imports",
        params={"carrier": "cmcc-iot", "device_credentials": "password"},
        content=text.encode(),
        headers={**bearer(operator_key), "Content-Type": "text/csv"},
    )
    assert imported.status_code == 201, imported.text
    issued = imported.json()["device_credentials"]
    assert sorted(c["username"] for c in issued) == sorted(c[0] for c in cards)
    assert all(c["password"] for c in issued)
    await store.assign(cards[0][0], cards[-1][0])
    path = f"/v1/merchant/sims/{cards[1][0]}/device-credentials"
    mine = await http.get(path, headers=store.merchant)
    assert mine.status_code == 200, mine.text
    assert [c["kind"] for c in mine.json()] == ["password"]
    rotated = await http.post(
        f"{path}/rotate", json={"kind": "certificate"}, headers=store.merchant
    )
    assert rotated.status_code == 201, rotated.text
    other = await Store(http, settings, operator_key).open(cards=0)
    assert_problem(await http.get(path, headers=other.merchant), 404, "sim-not-found")
