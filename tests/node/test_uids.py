from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.uids import InvalidUID, MissingUID, check_uid, is_conformant_uid


@pytest.mark.parametrize("value", ["1.2.840.10008.1.1", "1.2.3\x00", "1.2.3 ", "1.02.3"])
def test_accepts_uids(value: str) -> None:
    assert check_uid(value, "UID") == value.rstrip("\x00 ")


@pytest.mark.parametrize("value", [None, "", "..", "../1", "1..2", ".1", "1.", "1/2", "1\\2", "1.2.a",
                                   "1" * 65, "１.２", "1.2\x003"])
def test_refuses_unsafe_values(value: object) -> None:
    with pytest.raises(InvalidUID):
        check_uid(value, "UID")


@pytest.mark.parametrize("value, missing", [(None, True), ("", True), ("\x00 ", True), ("..", False),
                                            ("1" * 65, False)])
def test_absent_uids_are_missing_not_malformed(value: object, missing: bool) -> None:
    with pytest.raises(InvalidUID) as raised:
        check_uid(value, "UID")
    assert isinstance(raised.value, MissingUID) is missing


@given(st.text(max_size=80))
def test_anything_accepted_is_a_safe_path_component(value: str) -> None:
    try:
        uid = check_uid(value, "UID")
    except InvalidUID:
        return
    assert uid and len(uid) <= 64 and set(uid) <= set("0123456789.") and ".." not in uid
    assert not uid.startswith(".") and not uid.endswith(".")


def test_conformance_flags_leading_zeros() -> None:
    assert is_conformant_uid("1.2.0.3") and not is_conformant_uid("1.02.3")
