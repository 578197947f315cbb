"""Contact capture: after the handoff asked for contact fields, the visitor's next messages
are searched for them (e-mail, phone, name), on every channel, until all are given. Plain
functions, no I/O."""

from __future__ import annotations

import re

from shared.chatbots import ContactField
from shared.views import Contact

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w@])(\+?\d[\d\s().\-/]{5,}\d)(?![\w@])")
_NAME_INTRO = re.compile(
    # Only unambiguous introductions: "I am ..." too often goes on "... having trouble".
    r"(?:my name is|my name's|name:|call me|"
    r"ich heisse|ich heiße|mein name ist|je m'appelle|mon nom est|"
    r"me llamo|mi nombre es|mi chiamo|il mio nome e|il mio nome è|"
    r"meu nome e|meu nome é|me chamo|mijn naam is|ik heet)\s+"
    r"([^\W\d_][^\W\d_'\-]*(?:[ '\-][^\W\d_][^\W\d_'\-]*){0,3})",
    re.IGNORECASE,
)
_BARE_NAME = re.compile(r"^\s*([^\W\d_][^\W\d_'\-]*(?:[ '\-][^\W\d_][^\W\d_'\-]*){0,3})\s*[.!]?\s*$")
_NOT_NAME_WORDS = {
    "yes", "no", "ok", "okay", "thanks", "thank", "you", "hello", "hi", "hey", "sure", "please", "ja", "nein",
    "oui", "non", "si", "sí", "merci", "gracias", "danke", "grazie", "obrigado", "bedankt", "i", "is", "my", "the",
    "a", "what", "where", "how", "why", "when", "who", "can", "could", "do", "does", "not", "help", "order", "bye",
}


def _looks_like_a_name(candidate: str) -> bool:
    """One to three capitalised words, none of them an everyday word ("Where is my order"
    and "Thanks" are not names; "Jane Doe" and "Amélie" are)."""
    words = re.split(r"[ \-]", candidate.strip())
    return (1 <= len(words) <= 3 and all(w[:1].isupper() for w in words)
            and not any(w.casefold() in _NOT_NAME_WORDS for w in words))


def extract_contact(text: str, wanted: list[ContactField]) -> Contact:
    """E-mail, phone and name found in a visitor's message, for the fields still wanted."""
    found: dict[str, str] = {}
    rest = text
    if "email" in wanted and (m := _EMAIL.search(text)):
        found["email"] = m.group(0)
        rest = rest.replace(m.group(0), " ")
    if "phone" in wanted and (m := _PHONE.search(rest)):
        digits = re.sub(r"\D", "", m.group(1))
        if 6 <= len(digits) <= 15:
            found["phone"] = " ".join(m.group(1).split())
            rest = rest.replace(m.group(1), " ")
    if "name" in wanted:
        if m := _NAME_INTRO.search(rest):
            found["name"] = m.group(1).strip()
        elif not found and (m := _BARE_NAME.match(rest)) and _looks_like_a_name(m.group(1)):
            # A message that is only a name, when a name is what we asked for.
            found["name"] = m.group(1).strip()
    return Contact(**found)
