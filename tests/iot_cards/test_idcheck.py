"""The pure rules about identifiers: every way a resident ID number can be wrong, masks,
keyed hashes, IMEIs and tax ids."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowbill.errors import FlowbillError
from iot_cards import idcheck
from iot_cards.errors import (
    IdNumberBirthDate,
    IdNumberCheckDigit,
    IdNumberFormat,
    IdNumberFutureBirth,
    IdNumberRegion,
    IdNumberUnderage,
    InvalidName,
    InvalidPhone,
)
from tests.iot_cards.factories import TAX_ID, new_imei

TODAY = date(2026, 11, 25)


def with_check(first17: str) -> str:
    return first17 + idcheck.check_digit(first17)


def test_a_published_example_number_is_valid() -> None:
    # The standard's worked example: 11010519491231002X.
    checked = idcheck.parse_resident_id("11010519491231002x", today=TODAY)
    assert checked.number == "11010519491231002X"
    assert checked.birth_date == date(1949, 12, 31)
    assert checked.region == "110105"


@pytest.mark.parametrize(
    ("number", "error"),
    [
        ("1101051949123100", IdNumberFormat),  # too short
        ("1101051949123100212", IdNumberFormat),  # too long
        ("11010519491231002Y", IdNumberFormat),  # bad check character
        ("1101051949A231002X", IdNumberFormat),  # a letter in the digits
        ("", IdNumberFormat),
        (with_check("990105194912310"[:17].ljust(17, "0")), IdNumberRegion),  # province 99
        (with_check("10010519491231002"), IdNumberRegion),  # province 10
        (with_check("11000119491231002"), IdNumberRegion),  # a county under no prefecture
        (with_check("11010519491331002"), IdNumberBirthDate),  # month 13
        (with_check("11010520230229002"), IdNumberBirthDate),  # 29 Feb of a common year
        (with_check("11010518991231002"), IdNumberBirthDate),  # before 1900
        (with_check("11010520261126002"), IdNumberFutureBirth),  # tomorrow
        ("110105194912310021", IdNumberCheckDigit),  # the example with a wrong digit
        (with_check("11010520101126002"), IdNumberUnderage),  # 15 years and 364 days
    ],
)
def test_every_wrong_number_has_its_own_reason(number: str, error: type[FlowbillError]) -> None:
    with pytest.raises(error) as raised:
        idcheck.parse_resident_id(number, today=TODAY)
    # Each reason is its own problem type, and no message repeats the number.
    assert raised.value.type_.startswith("id-number-")
    assert number[6:14] not in raised.value.detail or not number


def test_the_types_of_the_reasons_are_distinct() -> None:
    kinds = [
        IdNumberFormat,
        IdNumberRegion,
        IdNumberBirthDate,
        IdNumberFutureBirth,
        IdNumberCheckDigit,
        IdNumberUnderage,
    ]
    assert len({k.type_ for k in kinds}) == len(kinds)
    assert all(k.status == 422 for k in kinds)


def test_sixteen_years_to_the_day_is_old_enough() -> None:
    idcheck.parse_resident_id(with_check("11010520101125002"), today=TODAY)
    assert idcheck.age_on(date(2008, 2, 29), date(2024, 2, 28)) == 15
    assert idcheck.age_on(date(2008, 2, 29), date(2024, 3, 1)) == 16


@given(
    st.dates(min_value=date(1900, 1, 1), max_value=date(2010, 11, 25)),
    st.sampled_from(sorted(idcheck.PROVINCES)),
    st.integers(0, 999),
)
def test_any_well_formed_number_of_an_adult_passes(born: date, province: int, seq: int) -> None:
    number = with_check(f"{province:02d}0102{born:%Y%m%d}{seq:03d}")
    assert idcheck.parse_resident_id(number, today=TODAY).birth_date == born
    wrong = "0123456789X".replace(number[-1], "")[seq % 10]
    with pytest.raises(IdNumberCheckDigit):
        idcheck.parse_resident_id(number[:17] + wrong, today=TODAY)


def test_masks_keep_only_what_a_person_recognises() -> None:
    assert idcheck.mask_id("11010519491231002X") == "1101**********002X"
    assert idcheck.mask_name("张三") == "张*"
    assert idcheck.mask_name("张小三") == "张*三"
    assert idcheck.mask_name("欧阳小明") == "欧**明"
    assert idcheck.mask_name("John Doe") == "J*** D**"
    assert idcheck.mask_phone("13812345678") == "138****5678"


def test_names_and_phones_are_checked() -> None:
    assert idcheck.normalise_name("  John   Doe ") == "John Doe"
    assert idcheck.normalise_name("阿依古丽·买买提") == "阿依古丽·买买提"
    for bad in ("张", "J", "张三1", "<script>", "x" * 101):
        with pytest.raises(InvalidName):
            idcheck.normalise_name(bad)
    assert idcheck.check_phone("+86 13812345678") == "13812345678"
    for bad in ("12812345678", "1381234567", "138123456789", "abc"):
        with pytest.raises(InvalidPhone):
            idcheck.check_phone(bad)


def test_the_keyed_hash_depends_on_the_key() -> None:
    number = "11010519491231002X"
    one = idcheck.id_hash(number, key=b"k1")
    assert one == idcheck.id_hash(number, key=b"k1")
    assert one != idcheck.id_hash(number, key=b"k2")
    assert len(one) == 32
    assert number.encode() not in one


def test_imeis_and_tax_ids() -> None:
    imei = new_imei()
    assert idcheck.luhn_valid(imei)
    assert not idcheck.luhn_valid(imei[:-1] + str((int(imei[-1]) + 1) % 10))
    assert idcheck.valid_tax_id(TAX_ID)
    assert not idcheck.valid_tax_id(TAX_ID[:-1] + "0")
    assert not idcheck.valid_tax_id("91350100M000100Y4")
