"""The one control-character rule (kamiyo/control_chars.py) and each of its callers."""

from __future__ import annotations

import pytest

from kamiyo.control_chars import control_re, has_control, replace_control
from kamiyo.users import EMAIL_RE
from kamiyo.webhooks.inbox import sanitise_error
from kamiyo.webhooks.limiting import sanitise_user_agent

C0 = [chr(i) for i in range(0x00, 0x20)]
DEL = "\x7f"
C1 = [chr(i) for i in range(0x80, 0xA0)]
CONTROLS = [*C0, DEL]
PRINTABLE_ASCII = "".join(chr(i) for i in range(0x20, 0x7F))
EVERY_CHARACTER = "".join(chr(i) for i in range(0x110000))


def test_the_rule_is_c0_and_del_exactly():
    # Removing every match leaves exactly the characters outside the rule.
    kept = control_re().sub("", EVERY_CHARACTER)
    assert kept == "".join(c for c in EVERY_CHARACTER if c not in CONTROLS)


def test_beyond_ascii_leaves_printable_ascii_only():
    assert control_re(beyond_ascii=True).sub("", EVERY_CHARACTER) == PRINTABLE_ASCII


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_c0_character_and_del_is_a_control(char):
    assert has_control(f"a{char}b")
    assert has_control(char, beyond_ascii=True)
    assert replace_control(f"a{char}b", " ") == "a b"


@pytest.mark.parametrize("char", C1, ids=lambda c: f"U+{ord(c):04X}")
def test_c1_characters_count_only_beyond_ascii(char):
    assert not has_control(f"a{char}b")
    assert replace_control(f"a{char}b", " ") == f"a{char}b"
    assert has_control(f"a{char}b", beyond_ascii=True)
    assert replace_control(f"a{char}b", "?", beyond_ascii=True) == "a?b"


def test_printable_text_is_left_alone():
    for beyond_ascii in (False, True):
        assert not has_control(PRINTABLE_ASCII, beyond_ascii=beyond_ascii)
        assert replace_control(PRINTABLE_ASCII, "?", beyond_ascii=beyond_ascii) == PRINTABLE_ASCII
    assert not has_control("Zoë Ünïcode 名前 😀")
    assert has_control("Zoë", beyond_ascii=True)


def test_a_run_becomes_one_replacement():
    assert replace_control("a\r\n\t\x00b\x7fc", " ") == "a b c"
    assert replace_control("a\x00é\x85😀b", "?", beyond_ascii=True) == "a?b"
    assert replace_control("", "?") == ""


# -- the callers: what each does with a match -------------------------------------


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_an_email_address_with_a_control_character_is_refused(char):
    assert EMAIL_RE.fullmatch("ada@example.com")
    for address in (f"a{char}da@example.com", f"ada@exa{char}mple.com", f"ada@example.c{char}om"):
        assert EMAIL_RE.fullmatch(address) is None


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_a_stored_error_has_its_control_characters_replaced_by_a_space(char):
    assert sanitise_error(ValueError(f"bad{char}{char}value")) == "ValueError: bad value"


@pytest.mark.parametrize("char", [*CONTROLS, *C1, "é", "😀"], ids=lambda c: f"U+{ord(c):04X}")
def test_a_user_agent_keeps_printable_ascii_only(char):
    assert sanitise_user_agent(f"curl/8.5{char}{char}x") == "curl/8.5?x"


def test_a_user_agent_keeps_every_printable_ascii_character():
    assert sanitise_user_agent(PRINTABLE_ASCII) == PRINTABLE_ASCII
    assert sanitise_user_agent(None) == ""
