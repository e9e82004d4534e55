"""Folder jobs: existing-caption modes, backups, output naming, crash safety, errors, stop and the summary."""

import numpy as np
import pytest
from PIL import Image
from tagger_graphs import make_model_folder

from lib_lora_train import fileio
from lib_lora_train.tagger.folder_job import FolderJobError, FolderJobRequest, run_folder_job
from lib_lora_train.tagger.postprocess import TagOptions
from lib_lora_train.tagger.runtime import LoadedTagger

# what the tiny model says about a white image with the default options, most confident first
WHITE_TAGS = ["white background", "1girl", "hatsune miku", "solo", "long hair", "^_^", "mid tag", "bow (weapon)"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return LoadedTagger("tiny", make_model_folder(tmp_path_factory.mktemp("models") / "tiny"), use_gpu=False)


def make_images(folder, count, colour=(255, 255, 255)):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(folder / f"img{i:02d}.png")
        Image.new("RGB", (24, 24), colour).save(paths[-1])
    return paths


def run(model, folder, **kwargs):
    return run_folder_job(model, model.tags, FolderJobRequest(str(folder), **kwargs))


def caption(image):
    return image.with_suffix(".txt").read_text(encoding="utf-8")


def test_new_captions_are_written_in_confidence_order(model, tmp_path):
    images = make_images(tmp_path / "data", 3)
    summary = run(model, tmp_path / "data")
    assert summary.written == 3 and summary.errors == []
    assert caption(images[0]) == ", ".join(WHITE_TAGS)


@pytest.fixture()
def captioned(tmp_path):
    images = make_images(tmp_path / "data", 2)
    images[0].with_suffix(".txt").write_text("old_tag, 1girl", encoding="utf-8")
    return images


def test_skip_leaves_existing_captions_and_does_not_tag_them(model, captioned, tmp_path):
    summary = run(model, tmp_path / "data", existing="skip")
    assert caption(captioned[0]) == "old_tag, 1girl"
    assert summary.skipped_existing == 1 and summary.tagged == 1 and summary.written == 1


def test_overwrite_replaces_and_keeps_a_backup(model, captioned, tmp_path):
    run(model, tmp_path / "data", existing="overwrite", backup=True)
    assert caption(captioned[0]) == ", ".join(WHITE_TAGS)
    assert captioned[0].with_name("img00.txt.bak").read_text(encoding="utf-8") == "old_tag, 1girl"
    assert not captioned[1].with_name("img01.txt.bak").exists()  # nothing to back up for a new caption


def test_a_second_run_never_overwrites_the_first_backup(model, captioned, tmp_path):
    run(model, tmp_path / "data", existing="overwrite")
    run(model, tmp_path / "data", existing="overwrite", options=TagOptions(max_tags=2))
    assert captioned[0].with_name("img00.txt.bak").read_text(encoding="utf-8") == "old_tag, 1girl"
    assert captioned[0].with_name("img00.txt.1.bak").read_text(encoding="utf-8") == ", ".join(WHITE_TAGS)


def test_overwrite_without_backup(model, captioned, tmp_path):
    run(model, tmp_path / "data", existing="overwrite", backup=False)
    assert not list((tmp_path / "data").glob("*.bak"))


def test_append_keeps_old_tags_first_without_duplicates(model, captioned, tmp_path):
    run(model, tmp_path / "data", existing="append")
    expected = ["old_tag", "1girl"] + [t for t in WHITE_TAGS if t != "1girl"]
    assert caption(captioned[0]) == ", ".join(expected)


def test_prepend_puts_new_tags_first_without_duplicates(model, captioned, tmp_path):
    run(model, tmp_path / "data", existing="prepend")
    assert caption(captioned[0]) == ", ".join([*WHITE_TAGS, "old_tag"])


def test_duplicates_match_across_underscores_and_case(model, tmp_path):
    images = make_images(tmp_path / "data", 1)
    images[0].with_suffix(".txt").write_text("Long_Hair, extra", encoding="utf-8")
    run(model, tmp_path / "data", existing="append")
    tags = caption(images[0]).split(", ")
    assert tags[:2] == ["Long_Hair", "extra"] and "long hair" not in tags


def test_always_first_tags_lead_in_every_mode(model, captioned, tmp_path):
    options = TagOptions(additional=("mychar",))
    for mode in ("append", "prepend", "overwrite"):
        run(model, tmp_path / "data", existing=mode, options=options)
        tags = caption(captioned[0]).split(", ")
        assert tags[0] == "mychar" and tags.count("mychar") == 1, mode


def test_unchanged_captions_are_not_rewritten(model, tmp_path):
    images = make_images(tmp_path / "data", 2)
    run(model, tmp_path / "data")
    before = images[0].with_suffix(".txt").stat().st_mtime_ns
    summary = run(model, tmp_path / "data", existing="overwrite")
    assert summary.unchanged == 2 and summary.written == 0
    assert images[0].with_suffix(".txt").stat().st_mtime_ns == before
    assert not list((tmp_path / "data").glob("*.bak"))


def test_output_folder_pattern_and_recursion(model, tmp_path):
    make_images(tmp_path / "data", 1)
    make_images(tmp_path / "data" / "sub", 1, colour=(0, 0, 255))
    summary = run(model, tmp_path / "data", output_dir=str(tmp_path / "out"), pattern="[name].[extension].caption")
    assert summary.written == 2
    assert (tmp_path / "out" / "img00.png.caption").exists()
    assert "blue background" in (tmp_path / "out" / "sub" / "img00.png.caption").read_text(encoding="utf-8")
    assert not list((tmp_path / "data").rglob("*.caption"))
    flat = run(model, tmp_path / "data", recursive=False, output_dir=str(tmp_path / "flat"))
    assert flat.total == 1


@pytest.mark.parametrize("pattern", ["../[name].txt", "sub/[name].txt", "[name].png", "[stem].txt", ".txt"])
def test_dangerous_or_unknown_patterns_are_refused(model, tmp_path, pattern):
    make_images(tmp_path / "data", 1)
    with pytest.raises(FolderJobError):
        run(model, tmp_path / "data", pattern=pattern)


def test_missing_folder_is_refused_with_its_name(model, tmp_path):
    with pytest.raises(FolderJobError, match="nowhere"):
        run(model, tmp_path / "nowhere")


def test_corrupt_images_are_reported_and_the_rest_tagged(model, tmp_path):
    images = make_images(tmp_path / "data", 3)
    (tmp_path / "data" / "img01b.jpg").write_bytes(b"\xff\xd8 garbage")
    summary = run(model, tmp_path / "data", batch_size=2)
    assert summary.written == 3 and len(summary.errors) == 1 and "img01b.jpg" in summary.errors[0]
    assert all(caption(i) for i in images) and not (tmp_path / "data" / "img01b.txt").exists()
    assert "img01b.jpg" in summary.report()


class CrashesOnSecondBatch:
    def __init__(self, model):
        self.model, self.calls = model, 0
        self.input_size, self.fixed_batch, self.on_gpu = model.input_size, None, False

    def run(self, batch):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("simulated crash (out of memory, killed session...)")
        return self.model.run(batch)


def test_a_crash_mid_folder_leaves_only_complete_caption_files(model, tmp_path):
    images = make_images(tmp_path / "data", 6)
    for image in images:
        image.with_suffix(".txt").write_text("old caption", encoding="utf-8")
    crashing = CrashesOnSecondBatch(model)
    request = FolderJobRequest(str(tmp_path / "data"), existing="overwrite", batch_size=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_folder_job(crashing, model.tags, request)
    texts = [caption(i) for i in images]
    assert texts[:2] == [", ".join(WHITE_TAGS)] * 2  # first batch done
    assert texts[2:] == ["old caption"] * 4  # the rest untouched, not truncated
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")]


def test_a_crash_during_a_write_keeps_the_old_caption_whole(model, tmp_path, monkeypatch):
    images = make_images(tmp_path / "data", 3)
    for image in images:
        image.with_suffix(".txt").write_text("old caption", encoding="utf-8")
    real_replace, calls = fileio.os.replace, []

    def dies_on_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "replace", dies_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        run(model, tmp_path / "data", existing="overwrite", backup=False)
    assert caption(images[0]) == ", ".join(WHITE_TAGS)
    assert caption(images[1]) == "old caption" and caption(images[2]) == "old caption"
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.endswith(".tmp")]


def test_stop_after_the_first_batch(model, tmp_path):
    images = make_images(tmp_path / "data", 6)
    seen = []
    request = FolderJobRequest(str(tmp_path / "data"), batch_size=2)
    summary = run_folder_job(
        model, model.tags, request, progress=lambda d, t, m: seen.append((d, t)), should_stop=lambda: True
    )
    assert summary.stopped and summary.written == 2
    assert [i.with_suffix(".txt").exists() for i in images] == [True, True, False, False, False, False]
    assert seen[0] == (0, 6) and seen[-1] == (2, 6)


def test_frequency_summary(model, tmp_path):
    make_images(tmp_path / "data", 3)
    make_images(tmp_path / "data" / "red", 2, colour=(255, 0, 0))
    summary = run(model, tmp_path / "data")
    assert summary.frequencies["1girl"] == 5
    assert summary.frequencies["white background"] == 3 and summary.frequencies["red background"] == 2
    report = summary.report(top=3)
    assert "Tag frequencies (top 3 of" in report and "5 captions written" in report
    assert summary.images_per_second > 0 and np.isfinite(summary.images_per_second)


def test_images_sharing_a_caption_name_are_not_mixed_up(model, tmp_path):
    make_images(tmp_path / "data", 1)
    Image.new("RGB", (24, 24), (255, 0, 0)).save(tmp_path / "data" / "img00.jpg")
    summary = run(model, tmp_path / "data", existing="overwrite")
    assert summary.written == 1 and len(summary.errors) == 1 and "[name].[extension].txt" in summary.errors[0]
    # the first in file order (img00.jpg, red) owns img00.txt; img00.png is reported, not mixed in
    assert "img00.png" in summary.errors[0]
    assert "red background" in (tmp_path / "data" / "img00.txt").read_text(encoding="utf-8")
    separate = run(model, tmp_path / "data", pattern="[name].[extension].txt")
    assert separate.written == 2 and separate.errors == []
