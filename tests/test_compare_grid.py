"""Grid layout math and the Pillow composer."""

import pytest
from PIL import Image

from lib_lora_train.compare.grid import MISSING_CELL, GridLayout, cell_size_of, compose_grid, plan_layout


def test_layout_places_cells_after_the_label_margins():
    layout = GridLayout(rows=3, cols=4, cell_w=64, cell_h=32, left=50, top=20)
    assert layout.size == (50 + 4 * 64, 20 + 3 * 32)
    assert layout.cell_box(0, 0) == (50, 20, 114, 52)
    assert layout.cell_box(2, 3) == (50 + 3 * 64, 20 + 2 * 32, 50 + 4 * 64, 20 + 3 * 32)
    assert layout.col_label_box(1) == (114, 0, 178, 20)
    assert layout.row_label_box(1) == (0, 52, 50, 84)
    with pytest.raises(IndexError):
        layout.cell_box(3, 0)


def test_margins_grow_with_the_longest_label():
    short = plan_layout((64, 64), ["e1"], ["w1"], 14)
    long = plan_layout((64, 64), ["epoch 100000 final"], ["w1"], 14)
    assert long.left > short.left > 0 and short.top > 0


def test_cell_size_is_the_largest_render():
    a, b = Image.new("RGB", (64, 60)), Image.new("RGB", (60, 64))
    assert cell_size_of([[a, None], [None, b]], (8, 8)) == (64, 64)
    assert cell_size_of([[None]], (8, 8)) == (8, 8)


def test_compose_puts_each_image_in_its_cell_and_marks_missing_ones():
    colours = [[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), None]]
    images = [[Image.new("RGB", (40, 40), c) if c else None for c in row] for row in colours]
    grid = compose_grid(images, ["epoch 1", "epoch 2"], ["weight 0.5", "weight 1"])
    layout = plan_layout((40, 40), ["epoch 1", "epoch 2"], ["weight 0.5", "weight 1"], 10)
    assert grid.size == layout.size
    for r, row in enumerate(colours):
        for c, colour in enumerate(row):
            x0, y0, x1, y1 = layout.cell_box(r, c)
            assert grid.getpixel(((x0 + x1) // 2, (y0 + y1) // 2)) == (colour or MISSING_CELL)
    # labels are drawn: the label areas are not blank
    assert grid.crop((0, layout.top, layout.left, layout.size[1])).getextrema() != ((255, 255),) * 3


def test_compose_checks_label_counts():
    with pytest.raises(ValueError, match="labels"):
        compose_grid([[None]], ["a", "b"], ["c"])
