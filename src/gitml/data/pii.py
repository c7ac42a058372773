"""Finding personal data where the schema does not expect it, and pseudonymising where it does."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MIN_KEY_LENGTH = 16

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A phone number: an optional +country code, then 9-15 digits split by spaces, dots, dashes or
# brackets. Plain digit runs are left to the card check so that counts and codes do not match.
_PHONE = re.compile(
    r"(?<![\w.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{1,4}[ .-])(?:\d{2,4}[ .-]){1,4}\d{2,4}(?![\w-])"
)
_NATIONAL_ID = re.compile(r"(?<!\d)(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4})(?!\d)")  # US SSN shape
_CARD = re.compile(r"(?<!\d)\d(?:[ -]?\d){12,18}(?!\d)")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")  # checked by ipaddress


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum that every payment card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _cards(text: str) -> bool:
    for match in _CARD.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_valid(digits):
            return True
    return False


def _ip_addresses(text: str) -> bool:
    for match in _IPV4.finditer(text):
        if all(int(part) <= 255 for part in match.group().split(".")):
            return True
    for match in _IPV6.finditer(text):
        try:
            ipaddress.IPv6Address(match.group())
            return True
        except ValueError:
            continue
    return False


def _phones(text: str) -> bool:
    for match in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        if 9 <= len(digits) <= 15 and not _NATIONAL_ID.fullmatch(match.group()):
            return True
    return False


DETECTORS: dict[str, Callable[[str], bool]] = {
    "e-mail address": lambda text: _EMAIL.search(text) is not None,
    "national-ID number": lambda text: _NATIONAL_ID.search(text) is not None,
    "payment card number": _cards,
    "IP address": _ip_addresses,
    "phone number": _phones,
}


def detect(text: str) -> str | None:
    """The kind of personal data `text` holds, or None."""
    for kind, found in DETECTORS.items():
        if found(text):
            return kind
    return None


def mask(text: str) -> str:
    """Show the shape of a value without repeating it: j***@e******.com, 4***-****-****-1111."""
    shown = []
    for i, ch in enumerate(text):
        keep = i == 0 or i == len(text) - 1 or not ch.isalnum()
        shown.append(ch if keep else "*")
    return "".join(shown)


@dataclass(frozen=True)
class PiiFinding:
    """Personal data of one kind found in one column."""

    column: str
    kind: str
    rows: int
    example: str  # masked

    def describe(self) -> str:
        return (
            f"column '{self.column}' holds {self.rows} value(s) that look like personal data "
            f"({self.kind}, e.g. '{self.example}')"
        )


def scan_values(column: str, counts: Iterable[tuple[str, int]]) -> list[PiiFinding]:
    """Scan distinct values with their row counts; one finding per kind of personal data."""
    found: dict[str, tuple[int, str]] = {}
    for value, n in counts:
        kind = detect(value)
        if kind is not None:
            rows, example = found.get(kind, (0, mask(value)))
            found[kind] = (rows + n, example)
    return [PiiFinding(column, kind, rows, example) for kind, (rows, example) in found.items()]


def pseudonymize(value: str, key: bytes) -> str:
    """Keyed HMAC-SHA256 of a value: stable for one key, unlinkable without it."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
