"""Project and version names can never reach outside the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib_lora_train.store.names import StoreError, validate_name


@pytest.mark.parametrize("name", ["mychar", "my char v2", "キャラ", "a.b", "v1-final_2", "x" * 100])
def test_ordinary_names_pass_unchanged(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        ".",
        "a/b",
        "a\\b",
        "../etc",
        "x..y",
        ".hidden",
        ".trash",
        "a:b",
        "a*",
        "what?",
        'quote"',
        "pipe|",
        "<tag>",
        "tab\there",
        "nul\x00",
        " lead",
        "trail ",
        "dot.",
        "CON",
        "nul.txt",
        "com1",
        "x" * 101,
    ],
)
def test_unsafe_names_are_refused_with_the_kind_named(name):
    with pytest.raises(StoreError, match="version"):
        validate_name(name, "version")


def test_non_text_is_refused():
    with pytest.raises(StoreError):
        validate_name(None)  # type: ignore[arg-type]


@given(st.text(max_size=120))
def test_any_accepted_name_stays_one_folder_inside_the_root(name):
    root = Path("/store/root")
    try:
        validate_name(name)
    except StoreError:
        return
    joined = root / name
    assert joined.parent == root
    assert os.path.normpath(joined) == str(joined)
    assert Path(os.path.normpath(joined)).parent == root
    assert not name.startswith(".") and "/" not in name and "\\" not in name


@given(st.lists(st.sampled_from(["..", ".", "/", "\\", "a", "b", " ", ":"]), min_size=1, max_size=8))
def test_names_built_from_path_pieces_never_escape(pieces):
    name = "".join(pieces)
    try:
        validate_name(name)
    except StoreError:
        return
    assert os.path.normpath(os.path.join("/root", name)).startswith("/root/")
