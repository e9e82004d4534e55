"""The same comparison as X/Y/Z plot settings: Prompt S/R strings, the txt2img API payload, a pasteable infotext.

Facts of the WebUI v1.10.1 ``scripts/xyz_grid.py`` that this module follows:

- Prompt S/R: the axis values are CSV (``csv.reader(..., skipinitialspace=True)``, every value then stripped). For
  each cell the *first* value must occur in the prompt or the negative prompt, and every occurrence of it is replaced
  (``str.replace``) by the cell's value. Axes are applied X first, then Y, then Z, on the same prompt.
- ``script_args`` of "X/Y/Z plot" are, in order: x_type, x_values, x_values_dropdown, y_type, y_values,
  y_values_dropdown, z_type, z_values, z_values_dropdown, draw_legend, include_lone_images, include_sub_grids,
  no_fixed_seeds, vary_seeds_x, vary_seeds_y, vary_seeds_z, margin_size, csv_mode. Axis types are indexes into the
  txt2img axis list (``TXT2IMG_AXES`` below; extensions can only append to it).

Columns (weights) go on X and rows (epochs) on Y, as in our grid; several seeds go on Z.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain

from .lora_tags import format_weight
from .plan import ComparePlan, GridJob

# Labels of the txt2img X/Y/Z axis options of v1.10.1 in their order (img2img-only options left out).
TXT2IMG_AXES = (
    "Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R", "Prompt order",
    "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma", "Sigma Churn", "Sigma min",
    "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma", "Schedule max sigma", "Schedule rho",
    "Beta schedule alpha", "Beta schedule beta", "Eta", "Clip skip", "Denoising", "Initial noise multiplier",
    "Extra noise", "Hires upscaler", "VAE", "Styles", "UniPC Order", "Face restore", "Token merging ratio",
    "Token merging ratio high-res", "Always discard next-to-last sigma", "SGM noise multiplier",
    "Refiner checkpoint", "Refiner switch at", "RNG source", "FP8 mode", "Size",
)  # fmt: skip

SCRIPT_NAME = "x/y/z plot"  # the API looks scripts up by lower-cased title
SCRIPT_TITLE = "X/Y/Z plot"


class HandoffError(ValueError):
    """The comparison cannot be expressed as Prompt S/R (the message says why and what to change)."""


def csv_join(values: Sequence[str]) -> str:
    """Values -> the CSV text the X/Y/Z plot reads back as exactly these values (quoted where needed)."""
    for v in values:
        if v != v.strip():
            raise HandoffError(f"the X/Y/Z plot strips spaces around values, so {v!r} cannot be a Prompt S/R value")
        if "\n" in v or "\r" in v:
            raise HandoffError(f"{v!r}: Prompt S/R values cannot contain line breaks")
    with io.StringIO() as out:
        csv.writer(out, lineterminator="").writerow(values)
        return out.getvalue()


def csv_split(text: str) -> list[str]:
    """How the X/Y/Z plot reads axis values (its CSV dialect, every value stripped)."""
    return [v.strip() for v in chain.from_iterable(csv.reader(io.StringIO(text), skipinitialspace=True))]


def apply_prompt_sr(prompt: str, negative: str, values: Sequence[str], value: str) -> tuple[str, str]:
    """One Prompt S/R step as the X/Y/Z plot does it; raises HandoffError where the plot would stop."""
    first = values[0]
    if first not in prompt and first not in negative:
        raise HandoffError(f"Prompt S/R did not find {first!r} in the prompt or negative prompt")
    return prompt.replace(first, value), negative.replace(first, value)


@dataclass
class XYZHandoff:
    """Prompt S/R settings that reproduce one prompt's grids in the X/Y/Z plot."""

    prompt: str  # the prompt to put in txt2img (the top-left cell's prompt)
    negative_prompt: str
    x_values: list[str]  # weights (columns)
    y_values: list[str]  # epochs (rows)
    seeds: list[int] = field(default_factory=list)  # Z axis when more than one

    @property
    def x_text(self) -> str:
        return csv_join(self.x_values)

    @property
    def y_text(self) -> str:
        return csv_join(self.y_values)

    @property
    def z_text(self) -> str:
        return ",".join(str(s) for s in self.seeds)

    def cell_prompts(self) -> list[list[tuple[str, str]]]:
        """(prompt, negative) of every cell [row][col], computed exactly as the X/Y/Z plot would."""
        xs, ys = csv_split(self.x_text), csv_split(self.y_text)
        rows = []
        for y in ys:
            row = []
            for x in xs:
                p, n = apply_prompt_sr(self.prompt, self.negative_prompt, xs, x)
                row.append(apply_prompt_sr(p, n, ys, y))
            rows.append(row)
        return rows


def _weight_candidates(grid: GridJob) -> list[list[str]]:
    weights = [0.0 if c.weight is None else c.weight for c in grid.cells[0]]
    first_name = grid.cells[0][0].epoch.lora_name
    return [
        [f":{format_weight(w)}>" for w in weights],  # short form users know, e.g. :0.8>
        [f"{first_name}:{format_weight(w)}>" for w in weights],  # unambiguous when another tag ends in :0.8>
    ]


def _epoch_candidates(grid: GridJob) -> list[list[str]]:
    names = [row[0].epoch.lora_name for row in grid.cells]
    stems = {re.sub(r"-\d+$", "", n) for n in names}
    candidates = []
    if len(stems) == 1 and names[0] != next(iter(stems)):
        # -000001,-000002,…: the epoch suffix after the shared stem (the final file's suffix is empty)
        stem = next(iter(stems))
        candidates.append([n[len(stem) :] for n in names])
    candidates.append([f"<lora:{n}:" for n in names])
    return candidates


def build_handoff(grid: GridJob, seeds: Sequence[int] = ()) -> XYZHandoff:
    """The shortest Prompt S/R strings whose X/Y/Z cells have exactly ``grid``'s prompts; HandoffError if none do."""
    want = [[(c.prompt, c.negative_prompt) for c in row] for row in grid.cells]
    base = grid.cells[0][0]
    problems = []
    for ys in _epoch_candidates(grid):
        for xs in _weight_candidates(grid):
            handoff = XYZHandoff(base.prompt, base.negative_prompt, xs, ys, list(seeds) if len(seeds) > 1 else [])
            try:
                if handoff.cell_prompts() == want:
                    return handoff
                problems.append(f"X {handoff.x_text} / Y {handoff.y_text} changes other parts of the prompt")
            except HandoffError as exc:
                problems.append(str(exc))
    raise HandoffError(
        "no Prompt S/R strings reproduce this grid (" + "; ".join(problems) + "); remove other LoRA tags that share "
        "this version's name or weight text from the prompt"
    )


def plan_handoffs(plan: ComparePlan, grids: Sequence[GridJob]) -> list[XYZHandoff]:
    """One hand-off per prompt (seeds on Z), built from the first seed's grid of each prompt."""
    firsts = {}
    for grid in grids:
        firsts.setdefault(grid.prompt_index, grid)
    return [build_handoff(g, plan.seeds) for _, g in sorted(firsts.items())]


def axis_index(label: str, axes: Sequence[str] = TXT2IMG_AXES) -> int:
    """Index of an axis option by label (the X/Y/Z plot's dropdowns are of type "index")."""
    try:
        return list(axes).index(label)
    except ValueError:
        raise HandoffError(f"the X/Y/Z plot of this WebUI has no {label!r} axis") from None


def script_args(handoff: XYZHandoff, *, axes: Sequence[str] = TXT2IMG_AXES, include_cells: bool = True) -> list:
    """The 18 ``script_args`` of the X/Y/Z plot for ``handoff`` in v1.10.1 order."""
    sr = axis_index("Prompt S/R", axes)
    z_type = axis_index("Seed", axes) if handoff.seeds else axis_index("Nothing", axes)
    return [
        sr, handoff.x_text, [],
        sr, handoff.y_text, [],
        z_type, handoff.z_text, [],
        True,  # draw_legend
        include_cells,  # include_lone_images: the cells come back beside the grid
        False,  # include_sub_grids
        False,  # no_fixed_seeds
        False, False, False,  # vary_seeds_x/y/z: every cell keeps the seed, as in our grid
        0,  # margin_size
        True,  # csv_mode: values as text
    ]  # fmt: skip


def txt2img_payload(plan: ComparePlan, handoff: XYZHandoff, *, axes: Sequence[str] = TXT2IMG_AXES) -> dict:
    """``POST /sdapi/v1/txt2img`` body that runs ``handoff`` through the X/Y/Z plot with the plan's settings."""
    return {
        "prompt": handoff.prompt,
        "negative_prompt": handoff.negative_prompt,
        "seed": handoff.seeds[0] if handoff.seeds else plan.seeds[0],
        "subseed": -1,
        "subseed_strength": 0,
        "sampler_name": plan.sampler,
        "scheduler": plan.scheduler,
        "steps": plan.steps,
        "cfg_scale": plan.cfg_scale,
        "width": plan.width,
        "height": plan.height,
        "batch_size": 1,
        "n_iter": 1,
        "script_name": SCRIPT_NAME,
        "script_args": script_args(handoff, axes=axes),
        "send_images": True,
        "save_images": False,
    }


def _quote_param(value: str) -> str:
    # the WebUI's infotext quoting: JSON-quote values holding a comma, colon or line break
    return json.dumps(value, ensure_ascii=False) if any(ch in value for ch in ",:\n") else value


def xyz_infotext(plan: ComparePlan, handoff: XYZHandoff) -> str:
    """Generation-parameters text that, pasted into txt2img, fills the prompt, settings and the X/Y/Z plot."""
    params = {
        "Steps": str(plan.steps),
        "Sampler": plan.sampler,
        "Schedule type": plan.scheduler,
        "CFG scale": format_weight(plan.cfg_scale),
        "Seed": str(handoff.seeds[0] if handoff.seeds else plan.seeds[0]),
        "Size": f"{plan.width}x{plan.height}",
        "Script": SCRIPT_TITLE,
        "X Type": "Prompt S/R",
        "X Values": handoff.x_text,
        "Y Type": "Prompt S/R",
        "Y Values": handoff.y_text,
    }
    if handoff.seeds:
        params.update({"Z Type": "Seed", "Z Values": handoff.z_text})
    lines = [handoff.prompt]
    if handoff.negative_prompt:
        lines.append(f"Negative prompt: {handoff.negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote_param(v)}" for k, v in params.items()))
    return "\n".join(lines)
