"""The simulated identity-check provider and invoicing service behave as the parties would."""

from __future__ import annotations

import httpx

from tests.iot_cards.factories import resident_id


def invoice(request_id: str, **overrides: object) -> dict[str, object]:
    return {
        "request_id": request_id, "colour": "blue", "original_number": None,
        "seller": {"name": "Shop", "tax_id": "91350100M000100Y43"},
        "buyer": {"name": "个人", "tax_id": None},
        "lines": [{"item": "plan", "quantity": 1, "amount_minor": 943, "tax_minor": 57}],
        "amount_minor": 943, "tax_minor": 57, "total_minor": 1000, "currency": "CNY",
        **overrides,
    }  # fmt: skip


async def test_invoices_are_numbered_once_and_must_add_up(iot_gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=iot_gateway_url) as client:
        first = await client.post("/invoices", json=invoice("sim-a"))
        again = await client.post("/invoices", json=invoice("sim-a"))
        assert first.status_code == 200
        number = first.json()["invoice_number"]
        assert len(number) == 20
        assert again.json()["invoice_number"] == number
        unbalanced = await client.post("/invoices", json=invoice("sim-b", tax_minor=58))
        assert unbalanced.json()["reason"] == "amounts_do_not_add_up"
        orphan = await client.post(
            "/invoices",
            json=invoice(
                "sim-c",
                colour="red",
                original_number="0" * 20,
                amount_minor=-943,
                tax_minor=-57,
                total_minor=-1000,
                lines=[{"item": "plan", "quantity": -1, "amount_minor": -943, "tax_minor": -57}],
            ),
        )
        assert orphan.json()["reason"] == "original_not_found"
        red = await client.post(
            "/invoices",
            json=invoice(
                "sim-d",
                colour="red",
                original_number=number,
                amount_minor=-943,
                tax_minor=-57,
                total_minor=-1000,
                lines=[{"item": "plan", "quantity": -1, "amount_minor": -943, "tax_minor": -57}],
            ),
        )
        assert red.json()["status"] == "confirmed"
        assert (await client.get("/invoices/sim-x")).status_code == 404


async def test_identity_checks_are_idempotent_and_never_echo_the_person(
    iot_gateway_url: str,
) -> None:
    body = {"request_id": "sim-check-1", "name": "张三", "id_number": resident_id(),
            "phone": "13812345678"}  # fmt: skip
    async with httpx.AsyncClient(base_url=iot_gateway_url) as client:
        accepted = await client.post("/identity-checks", json=body)
        assert accepted.status_code in (200, 202)
        assert body["id_number"] not in accepted.text
        conflict = await client.post("/identity-checks", json={**body, "name": "李四"})
        assert conflict.status_code == 409
        malformed = await client.post("/identity-checks", json={**body, "id_number": "1"})
        assert malformed.status_code == 422
        assert "1" not in str(malformed.json()["errors"][0].get("input", ""))
