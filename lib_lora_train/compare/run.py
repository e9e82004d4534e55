"""Running a comparison on any host: render each unique cell once, save cells and grids with their parameters, score.

The host supplies only ``render(cell) -> RenderedCell | None`` (None when interrupted or failed), optionally its own
grid composer and a tagger. The result folder ``compare/<timestamp>/`` holds:

- ``cells/p1-s42-e000003-w0.8.png`` … each with the WebUI-style ``parameters`` PNG text of its render;
- ``grid-p1-s42.png`` per prompt and seed, with ``parameters`` (top-left cell) and ``lora_compare`` (the plan, JSON);
- ``plan.json``, ``result.json`` (paths, S/R strings, scores) and, when scored, ``scores.png``.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lib_lora_train.fileio import atomic_write_bytes, atomic_write_text

from .grid import compose_grid
from .lora_tags import format_weight
from .plan import CellJob, ComparePlan, GridJob, render_order
from .score_chart import score_chart
from .scoring import (
    DEFAULT_THRESHOLD,
    ScoreReport,
    TagImages,
    aggregate,
    best_tradeoff,
    other_prompt_tags,
    pareto_front,
    score_image,
)
from .xyz import HandoffError, plan_handoffs, xyz_infotext


@dataclass
class RenderedCell:
    image: Image.Image
    infotext: str = ""


Render = Callable[[CellJob], "RenderedCell | None"]
Compose = Callable[[Sequence[Sequence["Image.Image | None"]], Sequence[str], Sequence[str]], Image.Image]
Progress = Callable[[int, int, CellJob], None]


@dataclass
class CompareResult:
    folder: Path
    grids: list[Path] = field(default_factory=list)
    cells: list[Path] = field(default_factory=list)
    handoffs: list[dict] = field(default_factory=list)
    scores: ScoreReport | None = None
    score_chart: Path | None = None
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "folder": str(self.folder),
            "grids": [str(p) for p in self.grids],
            "cells": [str(p) for p in self.cells],
            "xyz": self.handoffs,
            "scores": self.scores.to_dict() if self.scores else None,
            "score_chart": str(self.score_chart) if self.score_chart else None,
            "interrupted": self.interrupted,
            "notes": self.notes,
        }


def plan_summary(plan: ComparePlan) -> dict:
    """The plan as plain JSON (for ``plan.json`` and the grid's PNG text)."""
    return {
        "project": plan.project,
        "version": plan.version,
        "epochs": [{"epoch": e.epoch, "lora": e.lora_name} for e in plan.epochs],
        "weights": plan.weights,
        "no_lora_column": plan.include_no_lora,
        "prompts": plan.prompts,
        "negative_prompt": plan.negative_prompt,
        "seeds": plan.seeds,
        "sampler": plan.sampler,
        "scheduler": plan.scheduler,
        "steps": plan.steps,
        "cfg_scale": plan.cfg_scale,
        "width": plan.width,
        "height": plan.height,
    }


def new_run_folder(compare_dir: Path, now: datetime | None = None) -> Path:
    """``compare/<YYYYmmdd-HHMMSS>[-n]/``, never reusing an existing folder."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    folder, n = compare_dir / stamp, 1
    while folder.exists():
        n += 1
        folder = compare_dir / f"{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


def cell_file_name(cell: CellJob) -> str:
    if cell.is_reference:
        col = "nolora"
    else:
        col = "w" + format_weight(cell.weight or 0.0)
    row = "final" if cell.epoch.epoch is None else f"e{cell.epoch.epoch:06d}"
    name = f"p{cell.prompt_index + 1}-s{cell.seed}-{row if not cell.is_reference else 'ref'}-{col}.png"
    return re.sub(r"[^\w.\-]", "_", name)


def save_png(image: Image.Image, path: Path, texts: dict[str, str]) -> None:
    """PNG with text chunks (the WebUI reads ``parameters``), written atomically."""
    info = PngInfo()
    for key, value in texts.items():
        if value:
            info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buffer.getvalue())


def run_comparison(
    plan: ComparePlan,
    grids: Sequence[GridJob],
    render: Render,
    compare_dir: Path,
    *,
    compose: Compose | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
    tag_images: TagImages | None = None,
    traits: Sequence[str] = (),
    traits_source: str = "none",
    threshold: float = DEFAULT_THRESHOLD,
    vocabulary: set[str] | None = None,
) -> CompareResult:
    """Render, save and (with ``tag_images`` and traits or prompt tags) score ``grids``; see the module docstring."""
    folder = new_run_folder(compare_dir)
    result = CompareResult(folder)
    summary = plan_summary(plan)
    atomic_write_text(folder / "plan.json", json.dumps(summary, indent=2) + "\n")
    try:
        for h in plan_handoffs(plan, grids):
            result.handoffs.append(
                {
                    "prompt": h.prompt,
                    "x_values": h.x_text,
                    "y_values": h.y_text,
                    "z_values": h.z_text,
                    "infotext": xyz_infotext(plan, h),
                }
            )
    except HandoffError as exc:
        result.notes.append(f"X/Y/Z hand-off not possible: {exc}")

    rendered: dict[tuple, RenderedCell] = {}
    order = render_order(grids)
    cells_dir = folder / "cells"
    for done, cell in enumerate(order):
        if should_stop():
            result.interrupted = True
            break
        if progress:
            progress(done, len(order), cell)
        out = render(cell)
        if out is None:
            if should_stop():
                result.interrupted = True
                break
            result.notes.append(f"{cell_file_name(cell)}: the render failed; see the console")
            continue
        rendered[cell.render_key] = out
        path = cells_dir / cell_file_name(cell)
        save_png(out.image, path, {"parameters": out.infotext})
        result.cells.append(path)
    if progress and order:
        progress(len(rendered), len(order), order[-1])

    for grid in grids:
        images = [
            [rendered[c.render_key].image if c.render_key in rendered else None for c in row] for row in grid.cells
        ]
        if not any(im is not None for row in images for im in row):
            continue
        image = (compose or compose_grid)(images, grid.row_labels, grid.col_labels)
        top_left = rendered.get(grid.cells[0][0].render_key)
        texts = {"parameters": top_left.infotext if top_left else "", "lora_compare": json.dumps(summary)}
        path = folder / f"grid-p{grid.prompt_index + 1}-s{grid.seed}.png"
        save_png(image, path, texts)
        result.grids.append(path)

    if tag_images is None:
        result.notes.append("no tagger model available: scores skipped (install a tagger model in the Tagger tab)")
    elif rendered:
        result.scores = score_rendered(plan, grids, rendered, tag_images, traits, traits_source, threshold, vocabulary)
        result.score_chart = folder / "scores.png"
        save_png(score_chart(result.scores), result.score_chart, {})
    save_result(result)
    return result


def save_result(result: CompareResult) -> Path:
    """(Re)write ``result.json`` in the run folder."""
    path = result.folder / "result.json"
    atomic_write_text(path, json.dumps(result.to_dict(), indent=2) + "\n")
    return path


def score_rendered(
    plan: ComparePlan,
    grids: Sequence[GridJob],
    rendered: dict[tuple, RenderedCell],
    tag_images: TagImages,
    traits: Sequence[str],
    traits_source: str,
    threshold: float,
    vocabulary: set[str] | None,
) -> ScoreReport:
    """Tag every rendered image once and score every cell of every grid."""
    keys = list(rendered)
    confidences = dict(zip(keys, tag_images([rendered[k].image for k in keys]), strict=True))
    others = [other_prompt_tags(p, traits, plan.activation_tag, vocabulary) for p in plan.prompts]
    scored = []
    for grid in grids:
        for cell in grid.all_cells():
            if cell.render_key in confidences:
                score = score_image(confidences[cell.render_key], traits, others[cell.prompt_index], threshold)
                scored.append(
                    (cell.row, cell.col, grid.row_labels[cell.row], grid.col_labels[cell.col], cell.is_reference, score)
                )
    table = aggregate(scored)
    notes = []
    if not traits:
        notes.append("no trait tags (give some, or tag the dataset): fidelity not scored")
    if not any(others):
        notes.append("the prompts have no tags besides the activation tag and traits: flexibility not scored")
    return ScoreReport(
        list(traits),
        traits_source,
        others,
        threshold,
        table,
        best_tradeoff(table, plan.column_weights),
        pareto_front(table),
        "; ".join(notes),
    )
