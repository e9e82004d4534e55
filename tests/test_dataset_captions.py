"""Caption augmentation: keep_tokens, shuffling, tag and caption dropout, all reproducible from the seed."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from lib_lora_train.dataset.captions import process_caption

CAPTION = "mychar, red hair, smile, outdoors, blue sky, looking at viewer"


def test_keep_tokens_stay_first_while_the_rest_is_shuffled():
    rng = random.Random(0)
    results = {process_caption(CAPTION, rng, shuffle=True, keep_tokens=1) for _ in range(50)}
    assert len(results) > 5  # it really shuffles
    for result in results:
        tags = result.split(", ")
        assert tags[0] == "mychar"
        assert sorted(tags) == sorted(CAPTION.split(", "))


def test_keep_tokens_two():
    for seed in range(20):
        tags = process_caption(CAPTION, random.Random(seed), shuffle=True, keep_tokens=2).split(", ")
        assert tags[:2] == ["mychar", "red hair"]


def test_same_seed_same_captions():
    def run(seed):
        rng = random.Random(seed)
        return [
            process_caption(CAPTION, rng, shuffle=True, keep_tokens=1, tag_dropout=0.3, caption_dropout=0.1)
            for _ in range(30)
        ]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_no_shuffle_no_dropout_returns_the_caption_as_written():
    text = "A photo of mychar, smiling.  "
    assert process_caption(text, random.Random(0), shuffle=False, keep_tokens=1) == text.strip()


def test_caption_dropout_blanks_about_the_right_share():
    rng = random.Random(1)
    blanks = sum(process_caption(CAPTION, rng, caption_dropout=0.25) == "" for _ in range(2000))
    assert 400 < blanks < 600
    assert process_caption(CAPTION, rng, caption_dropout=1.0) == ""


def test_tag_dropout_never_drops_kept_tags():
    rng = random.Random(2)
    for _ in range(100):
        result = process_caption(CAPTION, rng, shuffle=False, keep_tokens=1, tag_dropout=0.5)
        assert result.split(", ")[0] == "mychar"
    assert process_caption(CAPTION, rng, shuffle=False, keep_tokens=1, tag_dropout=1.0) == "mychar"
    dropped = [len(process_caption(CAPTION, rng, keep_tokens=0, tag_dropout=0.5).split(", ")) for _ in range(500)]
    assert 2.5 < sum(dropped) / len(dropped) < 3.5  # about half of 6 tags remain


def test_messy_commas_and_spaces_are_cleaned_when_tags_are_processed():
    assert process_caption(" a ,b,, c ,", random.Random(0), shuffle=False, tag_dropout=1e-9) == "a, b, c"


@given(
    st.lists(st.text(alphabet="abcdefgh xyz", min_size=1, max_size=8), max_size=12), st.integers(0, 5), st.integers()
)
def test_shuffle_keeps_every_tag_and_the_kept_prefix(tags, keep, seed):
    clean = [t.strip() for t in tags if t.strip()]
    caption = ", ".join(clean)
    result = process_caption(caption, random.Random(seed), shuffle=True, keep_tokens=keep)
    out = [t for t in result.split(", ") if t]
    assert sorted(out) == sorted(clean)
    assert out[:keep] == clean[:keep]
