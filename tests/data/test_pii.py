"""The PII scanner: what it must find, and the ordinary values it must leave alone."""

from __future__ import annotations

import pytest

from gitml.data.pii import detect, luhn_valid, mask, pseudonymize, scan_values


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("jane.doe@example.com", "e-mail address"),
        ("contact: j_smith+news@mail.co.uk please", "e-mail address"),
        ("123-45-6789", "national-ID number"),
        ("4111 1111 1111 1111", "payment card number"),
        ("5500-0000-0000-0004", "payment card number"),
        ("378282246310005", "payment card number"),
        ("10.0.12.7", "IP address"),
        ("from 2001:db8::8a2e:370:7334", "IP address"),
        ("+1 415 555 2671", "phone number"),
        ("(030) 1234 5678", "phone number"),
        ("+44-20-7946-0958", "phone number"),
    ],
)
def test_detects_personal_data(text: str, kind: str) -> None:
    assert detect(text) == kind


@pytest.mark.parametrize(
    "text",
    [
        "Married-civ-spouse",
        "Outlying-US(Guam-USVI-etc)",
        "Trinadad&Tobago",
        "77516",
        "99999",
        "4111 1111 1111 1112",  # fails the Luhn check
        "1111111111111111",  # one digit repeated is a placeholder, not a card
        "999.1.1.1",  # not an IPv4 address
        "2026-11-25",
        "v1.4.0",
        "12:30:45",
    ],
)
def test_leaves_ordinary_values_alone(text: str) -> None:
    assert detect(text) is None


def test_luhn() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")


def test_mask_keeps_shape_not_content() -> None:
    assert mask("jane@example.com") == "j***@*******.**m"
    assert mask("4111-1111-1111-1111") == "4***-****-****-***1"


def test_scan_counts_rows_per_kind() -> None:
    findings = scan_values("notes", [("a@b.io", 3), ("call 555-123-4567", 2), ("fine", 10), ("c@d.io", 1)])
    by_kind = {f.kind: f.rows for f in findings}
    assert by_kind == {"e-mail address": 4, "phone number": 2}


def test_pseudonymize_is_keyed_and_stable() -> None:
    assert pseudonymize("C00001", b"k" * 16) == pseudonymize("C00001", b"k" * 16)
    assert pseudonymize("C00001", b"k" * 16) != pseudonymize("C00001", b"j" * 16)
    assert pseudonymize("C00001", b"k" * 16) != pseudonymize("C00002", b"k" * 16)
