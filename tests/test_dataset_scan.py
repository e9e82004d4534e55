"""Scanning folders: repeat folders, captions, sizes from headers, and every kind of bad or odd image."""

from __future__ import annotations

import pytest
from dataset_image_makers import (
    write_16bit_png,
    write_animated_gif,
    write_caption,
    write_cmyk_jpeg,
    write_empty_file,
    write_exif_rotated_jpeg,
    write_la_png,
    write_palette_transparent_png,
    write_png,
    write_random_bytes,
    write_rgba_png,
    write_truncated_jpeg,
)
from PIL import Image

from lib_lora_train.dataset import load_training_image, scan_dataset
from lib_lora_train.dataset.scan import parse_repeat_folder, read_image_size
from lib_lora_train.images import ImageLoadError


def _by_name(scan):
    return {item.image_path.name: item for item in scan.items}


def _problems(scan):
    return {p.path.rsplit("/", 1)[-1]: p for p in scan.problems}


def test_repeat_folders_captions_and_kohya_metadata(tmp_path):
    (tmp_path / "10_mychar").mkdir()
    (tmp_path / "style").mkdir()
    (tmp_path / "10_mychar" / "nested").mkdir()
    write_caption(write_png(tmp_path / "10_mychar" / "a.png"), "mychar, smile, smile, red hair")
    write_caption(write_png(tmp_path / "10_mychar" / "nested" / "b.png"), "mychar, blue sky")
    write_caption(write_png(tmp_path / "style" / "c.png"), "mychar,\nsketch\n")

    scan = scan_dataset(tmp_path, default_repeats=3)

    items = _by_name(scan)
    assert items["a.png"].repeats == 10 and items["a.png"].folder == "10_mychar"
    assert items["b.png"].repeats == 10 and items["b.png"].folder == "10_mychar"  # nested folders join their group
    assert items["c.png"].repeats == 3 and items["c.png"].folder == "style"
    assert items["c.png"].caption == "mychar, sketch"  # lines joined into one tag list
    assert scan.num_images == 3 and scan.num_repeated == 23
    assert scan.dataset_dirs == {
        "10_mychar": {"n_repeats": 10, "img_count": 2},
        "style": {"n_repeats": 3, "img_count": 1},
    }
    assert scan.tag_frequency["10_mychar"] == {"blue sky": 1, "mychar": 2, "red hair": 1, "smile": 1}
    assert scan.tag_frequency["style"] == {"mychar": 1, "sketch": 1}
    assert scan.problems == []


def test_images_directly_in_a_repeat_folder_use_its_name(tmp_path):
    root = tmp_path / "5_cat"
    root.mkdir()
    write_caption(write_png(root / "a.png"), "cat")
    (item,) = scan_dataset(root).items
    assert (item.folder, item.repeats) == ("5_cat", 5)


def test_non_recursive_scan_ignores_subfolders(tmp_path):
    write_png(tmp_path / "top.png")
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "deep.png")
    assert [i.image_path.name for i in scan_dataset(tmp_path, recursive=False).items] == ["top.png"]


@pytest.mark.parametrize(
    ("name", "repeats"), [("10_name", 10), ("3_a_b", 3), ("name", 2), ("0_name", 2), ("10name", 2), ("_x", 2)]
)
def test_parse_repeat_folder(name, repeats):
    assert parse_repeat_folder(name, default_repeats=2) == repeats


def test_caption_extension_is_configurable(tmp_path):
    image = write_png(tmp_path / "a.png")
    write_caption(image, "from txt")
    write_caption(image, "from caption", ".caption")
    assert scan_dataset(tmp_path).items[0].caption == "from txt"
    assert scan_dataset(tmp_path, caption_extension=".caption").items[0].caption == "from caption"
    assert scan_dataset(tmp_path, caption_extension="caption").items[0].caption == "from caption"


def test_upper_case_caption_extension_is_found(tmp_path):
    write_caption(write_png(tmp_path / "IMG_1.png"), "shouting", ".TXT")
    item = scan_dataset(tmp_path).items[0]
    assert item.has_caption and item.caption == "shouting"


def test_image_without_caption_is_kept_with_empty_caption_and_reported(tmp_path):
    write_png(tmp_path / "lonely.png")
    scan = scan_dataset(tmp_path)
    (item,) = scan.items
    assert item.caption == "" and item.has_caption is False
    problem = _problems(scan)["lonely.png"]
    assert problem.skipped is False and "lonely.txt" in problem.message


def test_non_utf8_caption_is_read_and_reported(tmp_path):
    image = write_png(tmp_path / "a.png")
    image.with_suffix(".txt").write_bytes("café, smile".encode("latin-1"))
    scan = scan_dataset(tmp_path)
    assert scan.items[0].has_caption and "smile" in scan.items[0].caption
    assert "UTF-8" in _problems(scan)["a.png"].message


def test_utf8_bom_is_not_part_of_the_first_tag(tmp_path):
    image = write_png(tmp_path / "a.png")
    image.with_suffix(".txt").write_bytes("\ufeffmychar, smile".encode())
    assert scan_dataset(tmp_path).items[0].caption == "mychar, smile"


def test_broken_files_are_reported_by_name_and_skipped(tmp_path):
    write_caption(write_png(tmp_path / "good.png"), "fine")
    write_empty_file(tmp_path / "empty.jpg")
    write_random_bytes(tmp_path / "noise.png")
    scan = scan_dataset(tmp_path)
    assert [i.image_path.name for i in scan.items] == ["good.png"]
    problems = _problems(scan)
    assert problems["empty.jpg"].skipped and "0 bytes" in problems["empty.jpg"].message
    assert problems["noise.png"].skipped and "not an image" in problems["noise.png"].message
    assert str(tmp_path / "noise.png") in str(problems["noise.png"])


def test_truncated_jpeg_fails_on_decode_with_its_name_and_verify_finds_it_at_scan(tmp_path):
    write_caption(write_truncated_jpeg(tmp_path / "cut.jpg"), "x")
    scan = scan_dataset(tmp_path)
    (item,) = scan.items  # the header is intact, so a fast scan cannot tell
    with pytest.raises(ImageLoadError) as info:
        load_training_image(item)
    assert "cut.jpg" in str(info.value) and "damaged" in info.value.reason

    verified = scan_dataset(tmp_path, verify=True)
    assert verified.items == [] and _problems(verified)["cut.jpg"].skipped


def test_exif_rotation_swaps_the_scanned_size_and_is_applied_on_load(tmp_path):
    path = write_exif_rotated_jpeg(tmp_path / "phone.jpg", width=80, height=40, orientation=6)
    assert read_image_size(path) == (40, 80)
    image = load_training_image(scan_dataset(tmp_path).items[0])
    assert image.size == (40, 80)
    # stored left-to-right dark->bright; orientation 6 turns it so it runs top-to-bottom dark->bright
    assert image.getpixel((20, 2))[0] < 60 and image.getpixel((20, 77))[0] > 190


def test_orientation_3_keeps_the_size(tmp_path):
    assert read_image_size(write_exif_rotated_jpeg(tmp_path / "r.jpg", 80, 40, orientation=3)) == (80, 40)


@pytest.mark.parametrize(
    ("writer", "pixel", "expected"),
    [
        (write_rgba_png, (2, 2), (255, 255, 255)),  # transparent -> white, not black
        (write_rgba_png, (30, 2), (255, 0, 0)),
        (write_la_png, (5, 5), (255, 255, 255)),
        (write_palette_transparent_png, (5, 5), (255, 255, 255)),
    ],
)
def test_transparency_is_composited_on_white(tmp_path, writer, pixel, expected):
    item = scan_dataset(_single(tmp_path, writer, "t.png")).items[0]
    image = load_training_image(item)
    assert image.mode == "RGB" and image.getpixel(pixel) == expected


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    item = scan_dataset(_single(tmp_path, write_cmyk_jpeg, "c.jpg")).items[0]
    image = load_training_image(item)
    red, green, blue = image.getpixel((5, 5))
    assert image.mode == "RGB" and red < 80 and green > 150 and blue > 150  # cyan


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    item = scan_dataset(_single(tmp_path, write_16bit_png, "deep.png")).items[0]
    assert item.size == (64, 16)
    image = load_training_image(item)
    values = [image.getpixel((x, 8))[0] for x in (0, 32, 63)]
    # clipping would make everything above 255/65535 white; scaling keeps the ramp
    assert values[0] < 5 and 110 < values[1] < 145 and values[2] > 250


def test_dark_16_bit_png_stays_dark(tmp_path):
    import numpy as np

    path = tmp_path / "dark.png"
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint16), "I;16").save(path)
    assert load_training_image(scan_dataset(tmp_path).items[0]).getpixel((1, 1))[0] <= 1


def test_animated_gif_trains_on_its_first_frame(tmp_path):
    item = scan_dataset(_single(tmp_path, write_animated_gif, "anim.gif")).items[0]
    assert load_training_image(item).getpixel((3, 3)) == (255, 255, 255)


def test_one_bad_file_does_not_stop_the_others(tmp_path):
    writers = [write_png, write_rgba_png, write_cmyk_jpeg, write_16bit_png, write_animated_gif]
    names = ["a.png", "b.png", "c.jpg", "d.png", "e.gif"]
    for writer, name in zip(writers, names, strict=True):
        write_caption(writer(tmp_path / name), "tag")
    write_empty_file(tmp_path / "f.png")
    write_random_bytes(tmp_path / "g.png")
    write_caption(write_truncated_jpeg(tmp_path / "h.jpg"), "tag")
    write_exif_rotated_jpeg(tmp_path / "i.jpg")  # no caption
    scan = scan_dataset(tmp_path)
    loaded, failed = [], []
    for item in scan.items:  # what the engine does while caching latents
        try:
            loaded.append(load_training_image(item).mode)
        except ImageLoadError as exc:
            failed.append(exc.path.rsplit("/", 1)[-1])
    assert len(loaded) == 6 and set(loaded) == {"RGB"}
    assert failed == ["h.jpg"]
    assert {name: p.skipped for name, p in _problems(scan).items()} == {"f.png": True, "g.png": True, "i.jpg": False}


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_dataset(tmp_path / "nope")


def _single(folder, writer, name):
    writer(folder / name)
    return folder


def test_scanning_reads_headers_only(tmp_path, monkeypatch):
    from PIL import ImageFile

    write_png(tmp_path / "a.png")
    write_exif_rotated_jpeg(tmp_path / "b.jpg")
    write_16bit_png(tmp_path / "c.png")
    write_animated_gif(tmp_path / "d.gif")
    Image.new("RGB", (30, 20)).save(tmp_path / "e.webp")
    decoded = []
    original_load = ImageFile.ImageFile.load

    def counting_load(self):
        decoded.append(self.format)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    scan = scan_dataset(tmp_path)
    assert len(scan.items) == 5 and decoded == []
    assert _by_name(scan)["e.webp"].size == (30, 20)


def test_huge_images_are_refused_by_name_not_by_a_crash(tmp_path, monkeypatch):
    write_caption(write_png(tmp_path / "huge.png", 64, 48), "x")
    # Pillow refuses images over twice MAX_IMAGE_PIXELS with DecompressionBombError (not an OSError)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    scan = scan_dataset(tmp_path)
    assert scan.items == [] and "too large" in _problems(scan)["huge.png"].message
    from lib_lora_train.images import load_rgb

    with pytest.raises(ImageLoadError, match="too large"):
        load_rgb(tmp_path / "huge.png")


def test_an_item_that_fails_at_decode_can_be_skipped_and_leaves_the_counts(tmp_path):
    (tmp_path / "4_x").mkdir()
    write_caption(write_png(tmp_path / "4_x" / "good.png"), "x, fine")
    write_caption(write_truncated_jpeg(tmp_path / "4_x" / "cut.jpg"), "x, cut")
    scan = scan_dataset(tmp_path)
    assert scan.num_repeated == 8
    for item in list(scan.items):
        try:
            load_training_image(item)
        except ImageLoadError as exc:
            scan.skip(item, exc.reason)
    assert [i.image_path.name for i in scan.items] == ["good.png"]
    assert scan.num_repeated == 4 and scan.tag_frequency == {"4_x": {"fine": 1, "x": 1}}
    assert scan.dataset_dirs == {"4_x": {"n_repeats": 4, "img_count": 1}}
    assert [p.path.endswith("cut.jpg") and p.skipped for p in scan.problems] == [True]
