"""What to render for an epoch comparison: rows = epochs, columns = weights, one grid per prompt and seed.

Everything here is pure: a ``ComparePlan`` (validated user choices) expands into ``GridJob`` s of ``CellJob`` s with
the final prompt text of every cell. Hosts only render cells; the X/Y/Z hand-off and the scoring read the same jobs,
so what the tab shows, what the API returns and what the X/Y/Z plot reproduces cannot drift apart.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .lora_tags import LoraTagError, format_lora_tag, format_weight, with_lora

MAX_CELLS = 2000  # a plan beyond this is a typo (e.g. a weight range with a tiny step), not a comparison


class PlanError(ValueError):
    """A comparison setting that cannot be used; the message names the field and the fix."""

    def __init__(self, field_name: str, message: str):
        self.field_name = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass(frozen=True)
class EpochEntry:
    """One saved checkpoint of a version, under the LoRA name the WebUI lists it by (the file stem)."""

    epoch: int | None  # None = the final file without an epoch suffix
    lora_name: str
    path: Path | None = None
    final_epoch: int | None = None  # the final file's epoch number (its ss_epoch), when known

    @property
    def label(self) -> str:
        if self.epoch is not None:
            return f"epoch {self.epoch}"
        return "final" if self.final_epoch is None else f"epoch {self.final_epoch} (final)"


def saved_epoch(path: Path) -> int | None:
    """``ss_epoch`` from a LoRA file's safetensors header (no tensors read); None when absent or unreadable."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size < 100_000_000:
                return None
            header = json.loads(handle.read(size))
        return int(header.get("__metadata__", {}).get("ss_epoch"))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def epoch_entries(checkpoints: Sequence[tuple[int | None, Path]]) -> list[EpochEntry]:
    """``VersionPaths.list_checkpoints()`` -> entries sorted by epoch with the final file last."""
    entries = [
        EpochEntry(epoch, Path(path).stem, Path(path), saved_epoch(Path(path)) if epoch is None else None)
        for epoch, path in checkpoints
    ]
    return sorted(entries, key=lambda e: (e.epoch is None, e.epoch or 0))


def _parse_number(text: str, field_name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PlanError(field_name, f"{text!r} is not a number") from None


def parse_weights(text: str) -> list[float]:
    """``"0.5, 0.6, 1"`` or ranges ``"0.5-1.0:0.1"`` (start-end:step, end included) -> weights in order, no repeats.

    Weights are rounded to 4 decimals so that a range gives 0.7, not 0.7000000000000001.
    """
    weights: list[float] = []
    for item in (part.strip() for part in text.split(",")):
        if re.fullmatch(r"[^\s]+(\s+[^\s]+)+", item) and ":" not in item:
            # "0.5 0.6 0.7": spaces instead of commas
            for sub in item.split():
                weights.extend(_expand_weight_item(sub))
        elif item:
            weights.extend(_expand_weight_item(item))
    unique = list(dict.fromkeys(round(w, 4) for w in weights))
    if not unique:
        raise PlanError("weights", "give at least one LoRA weight, e.g. 0.6, 0.8, 1 or 0.5-1.0:0.1")
    for w in unique:
        if not -4.0 <= w <= 4.0:
            raise PlanError("weights", f"{format_weight(w)} is outside -4..4; LoRA weights are usually 0.3 to 1.2")
    return unique


def _expand_weight_item(item: str) -> list[float]:
    m = re.fullmatch(r"(-?[\d.]+)\s*-\s*(-?[\d.]+)\s*:\s*([\d.]+)", item)
    if not m:
        return [_parse_number(item, "weights")]
    start, end, step = (_parse_number(g, "weights") for g in m.groups())
    if step <= 0:
        raise PlanError("weights", f"the step in {item!r} must be above 0")
    count = int(round(abs(end - start) / step)) + 1
    if count > 100:
        raise PlanError("weights", f"{item!r} gives {count} weights; use a larger step")
    sign = 1 if end >= start else -1
    values = [start + sign * i * step for i in range(count)]
    # floating steps can overshoot the end by a hair; the end itself is what the user asked for
    return [v for v in values if (v - end) * sign <= step * 1e-6]


def parse_int_list(text: str, field_name: str) -> list[int]:
    """``"1, 3, 5-7"`` -> [1, 3, 5, 6, 7] (order kept, repeats dropped)."""
    values: list[int] = []
    for item in (p.strip() for p in re.split(r"[,\s]+", text.strip()) if p.strip()):
        m = re.fullmatch(r"(-?\d+)-(\d+)", item)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo or hi - lo > 10000:
                raise PlanError(field_name, f"range {item!r} must go upwards and span at most 10000")
            values.extend(range(lo, hi + 1))
            continue
        try:
            values.append(int(item))
        except ValueError:
            raise PlanError(field_name, f"{item!r} is not a whole number") from None
    return list(dict.fromkeys(values))


def parse_seeds(text: str, rng: random.Random | None = None) -> list[int]:
    """Seeds for a fair comparison; ``-1`` becomes one fixed random seed so every cell shares it."""
    seeds = parse_int_list(text, "seeds") if text.strip() else [-1]
    rng = rng or random.Random()
    fixed = [rng.randrange(4294967294) if s == -1 else s for s in seeds]
    for s in fixed:
        if s < 0 or s >= 2**32:
            raise PlanError("seeds", f"{s} is outside 0..4294967295")
    return list(dict.fromkeys(fixed))


def select_epochs(
    entries: Sequence[EpochEntry], mode: str = "all", every: int = 1, subset: Sequence[int] = ()
) -> list[EpochEntry]:
    """Pick the rows: ``all``; ``every`` n-th epoch (the last epoch and the final file always kept); ``subset``."""
    if not entries:
        raise PlanError("epochs", "this version has no saved checkpoints yet; train it first")
    if mode == "all":
        return list(entries)
    if mode == "every":
        if every < 1:
            raise PlanError("every", "must be 1 or more")
        numbered = [e for e in entries if e.epoch is not None]
        last = numbered[-1].epoch if numbered else None
        return [e for e in entries if e.epoch is None or e.epoch % every == 0 or e.epoch == last]
    if mode == "subset":
        wanted = set(subset)
        chosen = [e for e in entries if e.epoch in wanted or (e.epoch is None and 0 in wanted)]
        missing = sorted(wanted - {e.epoch for e in entries} - {0})
        if missing:
            have = ", ".join(str(e.epoch) for e in entries if e.epoch is not None)
            raise PlanError(
                "epochs", f"no checkpoint for epoch(s) {missing}; saved epochs: {have or 'none'} (0 = final)"
            )
        if not chosen:
            raise PlanError("epochs", "choose at least one epoch")
        return chosen
    raise PlanError("mode", f"{mode!r} is not one of all, every, subset")


@dataclass
class ComparePlan:
    """The user's choices for one comparison; ``validate`` raises PlanError naming the bad field."""

    project: str
    version: str
    epochs: list[EpochEntry]
    weights: list[float]
    prompts: list[str]
    seeds: list[int]
    negative_prompt: str = ""
    sampler: str = "Euler a"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    include_no_lora: bool = True
    activation_tag: str = ""
    # every name this version's files may carry in a prompt (for rewriting an existing tag instead of doubling it)
    version_names: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not self.epochs:
            raise PlanError("epochs", "choose at least one epoch")
        if not self.weights:
            raise PlanError("weights", "give at least one LoRA weight")
        self.prompts = [p.strip() for p in self.prompts if p.strip()]
        if not self.prompts:
            raise PlanError("prompts", "write at least one prompt (one per line)")
        if not self.seeds:
            raise PlanError("seeds", "give at least one seed")
        if not 1 <= self.steps <= 150:
            raise PlanError("steps", "must be 1..150")
        if not 1.0 <= self.cfg_scale <= 30.0:
            raise PlanError("cfg_scale", "must be 1..30")
        for name, side in (("width", self.width), ("height", self.height)):
            if not 64 <= side <= 2048 or side % 8:
                raise PlanError(name, "must be a multiple of 8 between 64 and 2048")
        for entry in self.epochs:
            try:
                format_lora_tag(entry.lora_name, 1.0)
            except LoraTagError as exc:
                raise PlanError("epochs", f"{exc}; rename the checkpoint file") from None
        total = len(self.prompts) * len(self.seeds) * len(self.epochs) * self.columns_count
        if total > MAX_CELLS:
            raise PlanError(
                "weights", f"{total} images is too many for one comparison (max {MAX_CELLS}); fewer weights or epochs"
            )

    @property
    def column_weights(self) -> list[float | None]:
        """Weights of the columns; ``None`` is the no-LoRA reference column (last)."""
        cols: list[float | None] = list(self.weights)
        if self.include_no_lora and 0.0 not in self.weights:
            cols.append(None)
        return cols

    @property
    def columns_count(self) -> int:
        return len(self.column_weights)

    def prompts_missing_activation_tag(self) -> list[str]:
        """Prompts that do not contain the activation tag (rendered anyway; the tab warns)."""
        if not self.activation_tag.strip():
            return []
        tag = self.activation_tag.strip().lower()
        return [p for p in self.prompts if tag not in p.lower()]


@dataclass(frozen=True)
class CellJob:
    """One image of a grid. ``weight`` None = no-LoRA reference (rendered as the same prompt at weight 0)."""

    prompt_index: int
    seed_index: int
    row: int
    col: int
    epoch: EpochEntry
    weight: float | None
    prompt: str
    negative_prompt: str
    seed: int

    @property
    def is_reference(self) -> bool:
        return self.weight is None

    @property
    def render_key(self) -> tuple:
        """Cells with the same key are the same image: the reference column is rendered once per prompt and seed."""
        if self.is_reference:
            return ("reference", self.prompt_index, self.seed)
        return (self.epoch.lora_name, self.weight, self.prompt_index, self.seed)

    @property
    def column_label(self) -> str:
        return "no LoRA" if self.weight is None else f"weight {format_weight(self.weight)}"


@dataclass
class GridJob:
    """One grid: one prompt and one seed; ``cells[row][col]``."""

    prompt_index: int
    seed_index: int
    base_prompt: str
    seed: int
    cells: list[list[CellJob]]
    row_labels: list[str]
    col_labels: list[str]

    def all_cells(self) -> list[CellJob]:
        return [cell for row in self.cells for cell in row]


def cell_prompt(plan: ComparePlan, prompt: str, entry: EpochEntry, weight: float | None) -> str:
    """The prompt of one cell: the version's LoRA at ``weight`` (at 0 for the reference column, see CellJob).

    The reference keeps the tag at weight 0 rather than dropping it so that the text the model encodes is identical
    to the X/Y/Z plot's cell with weight 0 (the WebUI strips the tag; a weight of 0 adds exactly nothing).
    """
    names = plan.version_names or [e.lora_name for e in plan.epochs]
    return with_lora(prompt, entry.lora_name, 0.0 if weight is None else weight, names)


def expand(plan: ComparePlan) -> list[GridJob]:
    """All grids of the plan, prompt-major then seed; each grid's rows are epochs and columns weights."""
    plan.validate()
    grids = []
    columns = plan.column_weights
    for pi, prompt in enumerate(plan.prompts):
        for si, seed in enumerate(plan.seeds):
            rows = []
            for ri, entry in enumerate(plan.epochs):
                row = []
                for ci, weight in enumerate(columns):
                    # reference cells keep their row's LoRA name (at weight 0) so that their prompts match the X/Y/Z
                    # plot's cells; they share one render per prompt and seed (CellJob.render_key)
                    text = cell_prompt(plan, prompt, entry, weight)
                    row.append(CellJob(pi, si, ri, ci, entry, weight, text, plan.negative_prompt, seed))
                rows.append(row)
            grids.append(
                GridJob(
                    pi,
                    si,
                    prompt,
                    seed,
                    rows,
                    [e.label for e in plan.epochs],
                    ["no LoRA" if w is None else f"weight {format_weight(w)}" for w in columns],
                )
            )
    return grids


def render_order(grids: Sequence[GridJob]) -> list[CellJob]:
    """Unique cells ordered so that each LoRA at each weight is applied once (the WebUI re-merges on every change)."""
    unique: dict[tuple, CellJob] = {}
    for grid in grids:
        for cell in grid.all_cells():
            unique.setdefault(cell.render_key, cell)
    return sorted(unique.values(), key=lambda c: (not c.is_reference, c.row, c.col, c.prompt_index, c.seed_index))
