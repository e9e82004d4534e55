"""Loss masks (alpha channel or mask folder) and regularisation images (kohya's reg_data_dir balancing)."""

import numpy as np
import pytest
import torch
from dataset_image_makers import write_png, write_rgba_png
from PIL import Image

from lib_lora_train.dataset import masks as M
from lib_lora_train.dataset.reg_images import balanced_repeats, scan_reg_images


def test_alpha_channel_is_the_mask_and_follows_the_crop_and_flip(tmp_path):
    path = write_rgba_png(tmp_path / "a.png", size=64)  # left half transparent, right half opaque
    mask, found = M.load_mask(path)
    assert found
    grid = M.prepare_mask(mask, (64, 64), (64, 64))
    assert grid.shape == (1, 8, 8)
    assert torch.all(grid[0, :, :4] == 0) and torch.all(grid[0, :, 4:] == 1)
    mirrored = M.prepare_mask(mask, (64, 64), (64, 64), flip=True)
    assert torch.equal(mirrored, grid.flip(-1))


def test_a_wide_image_mask_is_centre_cropped_like_the_image(tmp_path):
    arr = np.zeros((64, 128), dtype=np.uint8)
    arr[:, 32:96] = 255  # the centre square is white
    (tmp_path / "masks").mkdir()
    Image.fromarray(arr, "L").save(tmp_path / "masks" / "wide.png")
    image = write_png(tmp_path / "wide.jpg", 128, 64)
    mask, found = M.load_mask(image, str(tmp_path / "masks"))
    assert found
    grid = M.prepare_mask(mask, (128, 64), (64, 64))
    assert torch.all(grid == 1)


def test_an_opaque_image_trains_everywhere(tmp_path):
    mask, found = M.load_mask(write_png(tmp_path / "x.png", 32, 32))
    assert not found and np.asarray(mask).min() == 255


def test_missing_masks_are_named_before_training(tmp_path):
    (tmp_path / "masks").mkdir()
    images = [write_png(tmp_path / f"{n}.png") for n in ("one", "two")]
    Image.new("L", (64, 48), 255).save(tmp_path / "masks" / "one.png")
    with pytest.raises(M.MaskError, match=r"no mask for 1 of 2 images \(two.png\)"):
        M.check_masks(images, str(tmp_path / "masks"))
    with pytest.raises(M.MaskError, match="does not exist"):
        M.check_masks(images, str(tmp_path / "nowhere"))
    M.check_masks(images[:1], str(tmp_path / "masks"))


def _reg_folder(tmp_path, counts):
    root = tmp_path / "reg"
    for folder, n in counts.items():
        (root / folder).mkdir(parents=True)
        for i in range(n):
            write_png(root / folder / f"{i}.png")
    return root


def test_reg_images_are_marked_and_quiet_about_missing_captions(tmp_path):
    scan = scan_reg_images(str(_reg_folder(tmp_path, {"1_person": 3})), caption_extension=".txt", default_repeats=1)
    assert len(scan.items) == 3 and all(item.is_reg for item in scan.items)
    assert scan.problems == []


@pytest.mark.parametrize(
    ("counts", "train", "want"),
    [
        ({"1_person": 3}, 7, [3, 2, 2]),  # later passes add one repeat per image in turn
        ({"1_person": 5}, 3, [1, 1, 1]),  # images beyond the count are left out
        ({"2_person": 2}, 4, [2, 2]),
    ],
)
def test_reg_repeats_fill_one_epoch_as_kohya_does(tmp_path, counts, train, want):
    scan = scan_reg_images(str(_reg_folder(tmp_path, counts)), caption_extension=".txt", default_repeats=1)
    items = balanced_repeats(scan, train)
    assert sorted((i.repeats for i in items), reverse=True) == want
    assert sum(i.repeats for i in items) == train


def test_missing_or_empty_reg_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="reg_data_dir"):
        scan_reg_images(str(tmp_path / "none"), caption_extension=".txt", default_repeats=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        scan_reg_images(str(tmp_path / "empty"), caption_extension=".txt", default_repeats=1)
