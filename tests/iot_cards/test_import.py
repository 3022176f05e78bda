"""Card batches from carriers: validated line by line, imported whole or not at all, and
assigned to merchants in blocks."""

from __future__ import annotations

import httpx

from flowbill.settings import Settings
from tenants.schemas import Role
from tests.conftest import assert_problem, bearer, make_tenant
from tests.iot_cards.factories import block_prefix, import_cards, new_card


async def test_a_good_batch_is_imported_and_assigned_in_a_block(
    http: httpx.AsyncClient, settings: Settings, operator_key: str
) -> None:
    prefix = block_prefix()
    cards = [new_card(prefix, n) for n in range(5)]
    imported = await import_cards(http, operator_key, cards)
    assert imported.status_code == 201, imported.text
    assert imported.json()["cards"] == 5
    merchant_id, key = await make_tenant(settings, role=Role.MERCHANT)
    body = {"merchant_id": merchant_id, "first_iccid": cards[1][0], "last_iccid": cards[3][0]}
    assigned = await http.post(
        "/v1/operator/iot/card-assignments", json=body, headers=bearer(operator_key)
    )
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["cards"] == 3
    mine = await http.get("/v1/merchant/iot/cards", headers=bearer(key))
    assert [c["iccid"] for c in mine.json()["items"]] == [c[0] for c in cards[1:4]]
    assert {c["state"] for c in mine.json()["items"]} == {"inventory"}
    # An overlapping block is refused whole.
    other_id, _ = await make_tenant(settings, role=Role.MERCHANT)
    overlap = {"merchant_id": other_id, "first_iccid": cards[0][0], "last_iccid": cards[4][0]}
    refused = await http.post(
        "/v1/operator/iot/card-assignments", json=overlap, headers=bearer(operator_key)
    )
    body_ = assert_problem(refused, 409, "cards-not-free")
    assert body_["busy"] == 3
    # Only to merchants.
    driver_id, _ = await make_tenant(settings, role=Role.DRIVER)
    wrong = {"merchant_id": driver_id, "first_iccid": cards[0][0], "last_iccid": cards[0][0]}
    assert_problem(
        await http.post(
            "/v1/operator/iot/card-assignments", json=wrong, headers=bearer(operator_key)
        ),
        404,
        "merchant-not-found",
    )


async def test_bad_rows_are_named_by_line_and_nothing_is_imported(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    prefix = block_prefix()
    good = [new_card(prefix, n) for n in range(3)]
    bad_luhn = good[0][0][:-1] + str((int(good[0][0][-1]) + 1) % 10)
    rows = [
        good[0],  # line 2
        (bad_luhn, "460110000000001", "1064000000001"),  # line 3: Luhn
        (good[1][0], "46011000000000", good[1][2]),  # line 4: IMSI of 14 digits
        (good[2][0], good[2][1], "999"),  # line 5: MSISDN
        good[0],  # line 6: duplicate of line 2
    ]
    answer = await import_cards(http, operator_key, rows)
    body = assert_problem(answer, 422, "card-import-rejected")
    errors = body["errors"]
    assert isinstance(errors, list)
    assert [e["line"] for e in errors] == [3, 4, 5, 6]
    reasons = [str(e["reason"]) for e in errors]
    assert "Luhn" in reasons[0]
    assert "imsi" in reasons[1]
    assert "msisdn" in reasons[2]
    assert reasons[3] == "duplicate of line 2"
    # Nothing of the batch is there: the good rows import cleanly now.
    again = await import_cards(http, operator_key, good)
    assert again.status_code == 201, again.text


async def test_cards_already_imported_are_refused(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    prefix = block_prefix()
    first = [new_card(prefix, n) for n in range(2)]
    assert (await import_cards(http, operator_key, first)).status_code == 201
    clash = new_card(prefix, 5)
    second = [new_card(prefix, 9), (clash[0], first[1][1], clash[2])]
    body = assert_problem(
        await import_cards(http, operator_key, second), 422, "card-import-rejected"
    )
    assert body["errors"] == [{"line": 3, "reason": "imsi already imported"}]


async def test_a_batch_needs_its_header_and_text(
    http: httpx.AsyncClient, operator_key: str
) -> None:
    headers = {**bearer(operator_key), "Content-Type": "text/csv"}
    params = {"carrier": "cmcc-iot"}
    no_header = await http.post(
        "/v1/operator/iot/card-imports", params=params, content=b"1,2,3\n", headers=headers
    )
    assert_problem(no_header, 422, "card-import-rejected")
    empty = await http.post(
        "/v1/operator/iot/card-imports",
        params=params,
        content=b"iccid,imsi,msisdn\n",
        headers=headers,
    )
    assert_problem(empty, 422, "card-import-rejected")
    binary = await http.post(
        "/v1/operator/iot/card-imports", params=params, content=b"\xff\xfe\x00", headers=headers
    )
    assert_problem(binary, 422, "invalid-input")
    carrier = await http.post(
        "/v1/operator/iot/card-imports",
        params={"carrier": "Bad Id"},
        content=b"iccid,imsi,msisdn\n",
        headers=headers,
    )
    assert_problem(carrier, 422, "invalid-input")
    not_operator = await http.post(
        "/v1/operator/iot/card-imports", params=params, content=b"iccid,imsi,msisdn\n"
    )
    assert not_operator.status_code == 401
