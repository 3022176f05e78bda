"""Pure rules about people's identifiers: the resident ID number of GB 11643-1999, names and
phone numbers, and their masked forms. No I/O: tested exhaustively.

Each way a resident ID number can be wrong is its own error (and so its own problem type),
so a store can tell its buyer exactly what to correct. Errors never quote the number.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass
from datetime import date

from ingest.protocol import iccid_check_digit
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

MINIMUM_AGE = 16
# GB 11643-1999: weights 2^(17-i) mod 11 of the first 17 digits; the sum mod 11 picks the
# check character from this table.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_SHAPE = re.compile(r"[0-9]{17}[0-9X]")
# The province-level codes of GB/T 2260 (the first two digits of every region code).
PROVINCES = frozenset(
    {
        11,
        12,
        13,
        14,
        15,
        21,
        22,
        23,
        31,
        32,
        33,
        34,
        35,
        36,
        37,
        41,
        42,
        43,
        44,
        45,
        46,
        50,
        51,
        52,
        53,
        54,
        61,
        62,
        63,
        64,
        65,
        71,
        81,
        82,
        83,
    }
)
_PHONE = re.compile(r"1[3-9][0-9]{9}")
_LATIN_NAME = re.compile(r"[A-Za-z][A-Za-z .'-]{0,98}[A-Za-z.]")
_CJK_NAME = re.compile(r"[\u3400-\u9fff\u00b7]{2,30}")


@dataclass(frozen=True, slots=True)
class ResidentId:
    """A checked resident ID number: its region, birth date and sex digit."""

    number: str
    region: str
    birth_date: date


def check_digit(first17: str) -> str:
    """The GB 11643-1999 check character of the first 17 digits."""
    total = sum(int(char) * weight for char, weight in zip(first17, _WEIGHTS, strict=True))
    return _CHECK[total % 11]


def age_on(birth: date, today: date) -> int:
    """Whole years from `birth` to `today` (a 29 February birthday ages on 1 March)."""
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def parse_resident_id(raw: str, *, today: date) -> ResidentId:
    """Check a resident ID number: 18 characters, a real region prefix, a valid birth date
    not in the future, the check digit, and a holder at least 16 years old."""
    number = raw.strip().upper()
    if not _SHAPE.fullmatch(number):
        raise IdNumberFormat(
            "a resident ID number is 18 characters: 17 digits and a check digit (0-9 or X)"
        )
    region = number[:6]
    if int(region[:2]) not in PROVINCES or (region[2:4] == "00" and region[4:] != "00"):
        raise IdNumberRegion("the first six digits are not a region code")
    try:
        birth = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise IdNumberBirthDate("digits 7 to 14 are not a valid birth date") from None
    if birth.year < 1900:
        raise IdNumberBirthDate("digits 7 to 14 are not a valid birth date")
    if birth > today:
        raise IdNumberFutureBirth("the birth date is in the future")
    if check_digit(number[:17]) != number[17]:
        raise IdNumberCheckDigit("the check digit does not match the other 17 digits")
    if age_on(birth, today) < MINIMUM_AGE:
        raise IdNumberUnderage(f"the card holder must be at least {MINIMUM_AGE} years old")
    return ResidentId(number=number, region=region, birth_date=birth)


def id_hash(number: str, *, key: bytes) -> bytes:
    """The keyed hash (HMAC-SHA256) of a checked ID number: all that identifies it at rest."""
    return hmac.new(key, number.encode(), hashlib.sha256).digest()


def mask_id(number: str) -> str:
    """1101**********1234: the first four and last four characters."""
    return f"{number[:4]}{'*' * (len(number) - 8)}{number[-4:]}"


def normalise_name(raw: str) -> str:
    """A buyer's name as given on their ID: Chinese characters (a middle dot allowed) or
    Latin letters with spaces, dots, apostrophes and hyphens."""
    name = " ".join(unicodedata.normalize("NFC", raw).split())
    if not (_CJK_NAME.fullmatch(name) or _LATIN_NAME.fullmatch(name)):
        raise InvalidName(
            "a name is 2 to 30 Chinese characters, or 2 to 100 Latin letters and spaces"
        )
    return name


def mask_name(name: str) -> str:
    """张*三, 张*, 欧**明; J*** D** for Latin names (each word keeps its first letter)."""
    if " " in name or name.isascii():
        return " ".join(word[0] + "*" * (len(word) - 1) for word in name.split())
    if len(name) == 2:
        return name[0] + "*"
    return name[0] + "*" * (len(name) - 2) + name[-1]


def check_phone(raw: str) -> str:
    """A mainland mobile number: 11 digits starting 13-19."""
    phone = raw.strip().removeprefix("+86").strip()
    if not _PHONE.fullmatch(phone):
        raise InvalidPhone("a phone number is a mainland mobile number of 11 digits")
    return phone


def mask_phone(phone: str) -> str:
    """138****1234."""
    return f"{phone[:3]}****{phone[-4:]}"


def luhn_valid(digits: str) -> bool:
    """Whether the last digit is the Luhn check digit of the others (IMEIs, ICCIDs)."""
    return digits.isascii() and digits.isdigit() and iccid_check_digit(digits[:-1]) == digits[-1]


_TAX_ID_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_TAX_ID_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def valid_tax_id(code: str) -> bool:
    """A unified social credit code (GB 32100-2015): 18 characters with its check character."""
    if len(code) != 18 or any(char not in _TAX_ID_CHARS for char in code):
        return False
    total = sum(
        _TAX_ID_CHARS.index(char) * weight
        for char, weight in zip(code[:17], _TAX_ID_WEIGHTS, strict=True)
    )
    return _TAX_ID_CHARS[(31 - total % 31) % 31] == code[17]
