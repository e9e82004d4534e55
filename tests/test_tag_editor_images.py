"""Image fixes (transparency, aspect, crop, perceptual hashes), thumbnails and the trash."""

import os

import numpy as np
import pytest
from PIL import Image
from tag_editor_helpers import make_folder

from lib_lora_train.images import ImageLoadError
from lib_lora_train.tag_editor.dataset import Dataset
from lib_lora_train.tag_editor.image_fixes import (
    centered_crop_box,
    crop_image,
    dhash,
    flag_extreme_aspect,
    flatten_transparent_images,
    group_near_duplicates,
    hash_images,
    phash,
)
from lib_lora_train.tag_editor.thumbnails import ThumbnailCache
from lib_lora_train.tag_editor.trash import move_to_trash


def test_transparent_images_are_flattened_on_white_and_captions_fixed(tmp_path):
    folder = make_folder(tmp_path / "ds", {"t.png": "1girl, transparent background", "o.png": "1girl"})
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.save(folder / "t.png")
    ds = Dataset.load(folder)
    report = flatten_transparent_images(ds, ds.ids(), tmp_path / "originals")
    assert report.fixed == [ds.find("t.png")] and not report.failures
    with Image.open(folder / "t.png") as fixed:
        assert fixed.mode == "RGB"
        assert fixed.getpixel((1, 1)) == (255, 255, 255) and fixed.getpixel((0, 0)) == (255, 0, 0)
    with Image.open(tmp_path / "originals" / "t.png") as original:
        assert original.mode == "RGBA"
    assert ds.entry(ds.find("t.png")).tags == ["1girl", "white background", "simple background"]
    assert ds.entry(ds.find("o.png")).tags == ["1girl"]


def test_extreme_aspect_is_flagged_and_cropped_to_the_limit(tmp_path):
    folder = make_folder(tmp_path / "ds", {"wide.png": "x", "ok.png": "y"})
    Image.new("RGB", (400, 100), (10, 20, 30)).save(folder / "wide.png")
    ds = Dataset.load(folder)
    (flag,) = flag_extreme_aspect(ds, ds.ids())
    assert flag.entry_id == ds.find("wide.png") and flag.ratio == 4.0
    box = centered_crop_box(400, 100)
    assert box == (50, 0, 350, 100)
    kept = crop_image(folder / "wide.png", box, folder, tmp_path / "originals")
    with Image.open(folder / "wide.png") as cropped:
        assert cropped.size == (300, 100)
    with Image.open(kept) as original:
        assert original.size == (400, 100)
    assert flag_extreme_aspect(ds, ds.ids()) == []
    with pytest.raises(ValueError, match="outside the image"):
        crop_image(folder / "ok.png", (0, 0, 100, 100), folder, tmp_path / "originals")


def _pattern(seed, size=64):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.NEAREST)


def test_hashes_are_stable_under_resize_and_differ_between_images():
    a, b = _pattern(1), _pattern(2)
    for fn in (phash, dhash):
        assert bin(fn(a) ^ fn(a.resize((50, 50), Image.BILINEAR))).count("1") <= 6
        assert bin(fn(a) ^ fn(b)).count("1") > 12


def test_near_duplicates_are_grouped(tmp_path):
    folder = make_folder(tmp_path / "ds", {"a.png": "", "a_small.png": "", "b.png": "", "c.png": ""})
    _pattern(1).save(folder / "a.png")
    _pattern(1, 40).save(folder / "a_small.png")
    _pattern(2).save(folder / "b.png")
    _pattern(3).save(folder / "c.png")
    ds = Dataset.load(folder)
    hashes, failures = hash_images(ds, ds.ids())
    assert not failures
    assert group_near_duplicates(hashes) == [[ds.find("a.png"), ds.find("a_small.png")]]


def test_near_duplicate_grouping_is_transitive_and_uses_the_distance():
    hashes = {1: 0b0, 2: 0b111, 3: 0b111111, 4: (1 << 63) | 0xFFFF}
    assert group_near_duplicates(hashes, max_distance=3) == [[1, 2, 3]]
    assert group_near_duplicates(hashes, max_distance=2) == []


def test_thumbnails_are_made_once_and_remade_when_the_image_changes(tmp_path):
    folder = make_folder(tmp_path / "ds", {"big.png": None}, size=(600, 300))
    cache = ThumbnailCache(tmp_path / "cache", size=64)
    first = cache.get(folder / "big.png")
    with Image.open(first) as thumb:
        assert thumb.size == (64, 32)
    stamp = os.stat(first).st_mtime_ns
    assert cache.get(folder / "big.png") == first and os.stat(first).st_mtime_ns == stamp
    Image.new("RGB", (100, 100)).save(folder / "big.png")
    os.utime(folder / "big.png", ns=(stamp + 10**9, stamp + 10**9))
    assert cache.get(folder / "big.png") != first


def test_thumbnail_of_a_broken_file_is_an_error_in_its_place(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    cache = ThumbnailCache(tmp_path / "cache", size=32)
    good, bad = cache.get_many([tmp_path / "ok.png", tmp_path / "bad.png"])
    assert good.exists() and isinstance(bad, ImageLoadError) and "bad.png" in str(bad)


def test_trash_keeps_relative_paths_and_never_overwrites(tmp_path):
    folder = make_folder(tmp_path / "ds", {"sub/a.png": "x"})
    ds = Dataset.load(folder)
    entry = ds.entry(ds.find("sub/a.png"))
    result = move_to_trash([entry.image_file, entry.caption_file], folder)
    trash = folder / ".trash" / "sub"
    assert [d for _, d in result.moved] == [trash / "a.png", trash / "a.txt"]
    assert not (folder / "sub" / "a.png").exists()
    # a second image of the same name gets a numbered pair in the trash
    make_folder(folder, {"sub/a.png": "y"})
    result = move_to_trash([folder / "sub" / "a.png", folder / "sub" / "a.txt"], folder)
    assert [d.name for _, d in result.moved] == ["a (2).png", "a (2).txt"]
    assert (trash / "a.txt").read_text(encoding="utf-8") == "x"
    assert (trash / "a (2).txt").read_text(encoding="utf-8") == "y"
    assert len(Dataset.load(folder)) == 0  # the hidden trash is not part of the dataset


def test_near_duplicate_jpegs_are_found_with_reduced_decoding(tmp_path):
    folder = make_folder(tmp_path / "ds", {"big.jpg": "", "small.jpg": "", "other.jpg": ""})
    _pattern(5, 512).save(folder / "big.jpg", quality=90)
    _pattern(5, 200).save(folder / "small.jpg", quality=70)
    _pattern(6, 512).save(folder / "other.jpg", quality=90)
    ds = Dataset.load(folder)
    for method in ("phash", "dhash"):
        hashes, _ = hash_images(ds, ds.ids(), method)
        assert group_near_duplicates(hashes) == [[ds.find("big.jpg"), ds.find("small.jpg")]]
    with pytest.raises(ValueError, match="phash"):
        hash_images(ds, ds.ids(), "md5")
