"""Contact capture without I/O (moved here from intake with the functions): e-mail, phone
and name picked out of a visitor's message for the fields still wanted."""

from __future__ import annotations

import pytest

from services.queue import contact
from shared.views import Contact


@pytest.mark.parametrize("text, wanted, expected", [
    ("sure, it's jane.doe@example.com", ["email"], {"email": "jane.doe@example.com"}),
    ("call me on +49 170 1234567 please", ["phone"], {"phone": "+49 170 1234567"}),
    ("My name is Jane Doe, jane@example.org, 0612345678", ["name", "email", "phone"],
     {"name": "Jane Doe", "email": "jane@example.org", "phone": "0612345678"}),
    ("Jane Doe", ["name"], {"name": "Jane Doe"}),
    ("Je m'appelle Amélie", ["name", "email"], {"name": "Amélie"}),
    ("thanks", ["name"], {}),
    ("Thank You", ["name"], {}),
    ("Where is my order", ["name"], {}),
    ("jane doe", ["name"], {}),
    ("Mary-Jane O'Neil", ["name"], {"name": "Mary-Jane O'Neil"}),
    ("my name is jane", ["name"], {"name": "jane"}),
    ("I have no idea what you mean?", ["email", "phone"], {}),
    ("jane@example.com", ["phone"], {}),
])
def test_contact_extraction(text, wanted, expected):
    got = contact.extract_contact(text, wanted)
    assert isinstance(got, Contact)
    assert got.model_dump(exclude_none=True) == expected


def test_what_is_still_missing_after_a_message():
    got = contact.extract_contact("jane@example.com", ["name", "email"])
    assert got.missing(["name", "email"]) == ["name"]
    assert Contact(name="Jane", email="jane@example.com").missing(["name", "email"]) == []


@pytest.mark.parametrize(("fields", "known", "expected"), [
    (["name", "email"], Contact(), ["name", "email"]),
    (["name", "email"], Contact(email="jane@example.com"), ["name"]),
    (["email", "phone"], Contact(name="Jane", email="jane@example.com", phone="0612345678"), []),
    ([], Contact(name="Jane"), []),
    (["phone"], Contact(name="Jane"), ["phone"]),
])
def test_missing(fields, known, expected):
    assert known.missing(fields) == expected


@pytest.mark.parametrize(("found", "empty"), [
    (Contact(), True),
    (Contact(name=""), True),
    (Contact(name="Jane"), False),
    (Contact(email="jane@example.com"), False),
    (Contact(phone="0612345678"), False),
])
def test_contact_is_empty(found, empty):
    assert found.empty is empty
