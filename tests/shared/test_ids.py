"""The shared id and redaction helpers every service uses."""

from __future__ import annotations

from shared.ids import conversation_id_for, derived_id, redact


def test_derived_ids_are_stable_and_tell_their_inputs_apart():
    assert derived_id("", "a", "b") == derived_id("", "a", "b")
    assert derived_id("", "a", "b") != derived_id("", "a", "c")
    assert derived_id("", "a", "bc") != derived_id("", "ab", "c")  # the parts are separated
    assert derived_id("x_", "a").startswith("x_") and len(derived_id("x_", "a")) == 2 + 32
    assert len(derived_id("", "a", length=64)) == 64
    assert conversation_id_for("b", "web", "v1") == conversation_id_for("b", "web", "v1") != \
        conversation_id_for("b", "web", "v2")


def test_redact():
    assert redact("url https://x/bot123:ABCDEF/sendMessage failed", ["123:ABCDEF", None, ""]) == \
        "url https://x/bot[redacted]/sendMessage failed"
    assert redact("key sk-1 and sk-1 again", ["sk-1"]) == "key [redacted] and [redacted] again"
    assert redact("abc", ["abc"]) == "abc"  # too short to be a secret (and to redact safely)
