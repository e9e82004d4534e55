"""A small chart of the scores to show beside the grid: one box per epoch x weight, like the grid itself.

Each box shows fidelity (F) and flexibility (X); its colour is their balance (harmonic mean) from red to green; the
best trade-off has a thick blue frame and the other Pareto-optimal boxes a thin one.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from .grid import load_font, plan_layout, text_size
from .scoring import ScoreReport

BOX = (112, 52)


def _colour(balance: float | None) -> tuple[int, int, int]:
    if balance is None:
        return (220, 220, 220)
    b = min(max(balance, 0.0), 1.0)
    return (int(235 - 120 * b), int(120 + 110 * b), 120)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def score_chart(report: ScoreReport) -> Image.Image:
    """The score table of ``report`` as an RGB image (rows = epochs, columns = weights)."""
    rows = sorted({(e.row, e.row_label) for e in report.table})
    cols = sorted({(e.col, e.col_label) for e in report.table})
    row_pos = {r: i for i, (r, _) in enumerate(rows)}
    col_pos = {c: i for i, (c, _) in enumerate(cols)}
    font = load_font(13)
    layout = plan_layout(BOX, [label for _, label in rows], [label for _, label in cols], 13)
    legend = "F = fidelity (traits found)   X = flexibility (other prompt tags found)   blue frame = best trade-off"
    legend_font = load_font(11)
    width = max(layout.size[0], text_size(legend, legend_font)[0] + 12)
    canvas = Image.new("RGB", (width, layout.size[1] + 22), "white")
    draw = ImageDraw.Draw(canvas)
    pareto = {(e.row, e.col) for e in report.pareto}
    best = (report.best.row, report.best.col) if report.best else None
    for i, (_, label) in enumerate(cols):
        x0, y0, x1, y1 = layout.col_label_box(i)
        w, h = text_size(label, font)
        draw.text((x0 + (x1 - x0 - w) // 2, y0 + (y1 - y0 - h) // 2), label, fill="black", font=font)
    for i, (_, label) in enumerate(rows):
        x0, y0, x1, y1 = layout.row_label_box(i)
        w, h = text_size(label, font)
        draw.text((x1 - w - 6, y0 + (y1 - y0 - h) // 2), label, fill="black", font=font)
    for e in report.table:
        x0, y0, x1, y1 = layout.cell_box(row_pos[e.row], col_pos[e.col])
        draw.rectangle((x0 + 2, y0 + 2, x1 - 3, y1 - 3), fill=_colour(e.balance))
        draw.text((x0 + 8, y0 + 8), f"F {_fmt(e.fidelity)}", fill="black", font=font)
        draw.text((x0 + 8, y0 + 26), f"X {_fmt(e.flexibility)}", fill="black", font=font)
        if (e.row, e.col) == best:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=(20, 60, 220), width=4)
        elif (e.row, e.col) in pareto:
            draw.rectangle((x0 + 1, y0 + 1, x1 - 2, y1 - 2), outline=(20, 60, 220), width=1)
    draw.text((6, layout.size[1] + 4), legend, fill="black", font=legend_font)
    return canvas
