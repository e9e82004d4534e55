"""One entry point for the tab and the API: a request as the user typed it -> a plan for a stored version -> a run.

The host passes its renderer (and optionally its grid composer and a tagger); everything else — reading the version's
checkpoints and dataset, the activation tag, the trait tags, the X/Y/Z strings, saving and scoring — happens here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .plan import (
    CellJob,
    ComparePlan,
    GridJob,
    PlanError,
    epoch_entries,
    expand,
    parse_int_list,
    parse_seeds,
    parse_weights,
    select_epochs,
)
from .run import CompareResult, Compose, Progress, RenderedCell, run_comparison, save_result
from .scoring import DEFAULT_THRESHOLD, TagImages, normalize_tag
from .traits import caption_tag_sets, collect_traits

DEFAULT_WEIGHTS = "0.5, 0.6, 0.7, 0.8, 0.9, 1.0"


@dataclass
class CompareRequest:
    """The user's inputs, as text where the tab has text boxes (the API takes the same fields)."""

    project: str
    version: str
    epochs: str = "all"  # "all", "every", "subset"
    every: int = 1
    subset: str = ""  # "1, 3, 5-7" (0 = the final file)
    weights: str = DEFAULT_WEIGHTS
    prompts: list[str] = field(default_factory=list)
    negative_prompt: str = ""
    seeds: str = "-1"
    sampler: str = "Euler a"
    scheduler: str = "Automatic"
    steps: int = 20
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    no_lora: bool = True
    activation_tag: str = ""  # empty = guessed from the dataset's captions
    score: bool = True
    traits: str = ""  # empty = from the tagger / captions
    threshold: float = DEFAULT_THRESHOLD


def guess_activation_tag(dataset: Path, min_share: float = 0.8) -> str:
    """The first caption tag shared by most captions (the guides put the activation tag first, keep_tokens = 1)."""
    firsts = [normalize_tag(tags[0]) for tags in caption_tag_sets(dataset) if tags]
    if not firsts:
        return ""
    best = max(set(firsts), key=firsts.count)
    if firsts.count(best) < min_share * len(firsts):
        return ""
    # return it as written in the first caption that has it, so prompts match the training captions
    for tags in caption_tag_sets(dataset):
        if tags and normalize_tag(tags[0]) == best:
            return tags[0].strip()
    return best


def build_plan(request: CompareRequest, version, rng: random.Random | None = None) -> ComparePlan:
    """``version`` is a ``VersionPaths``: its checkpoints become the rows; PlanError names a bad field."""
    entries = epoch_entries(version.list_checkpoints())
    subset = parse_int_list(request.subset, "subset") if request.epochs == "subset" else ()
    chosen = select_epochs(entries, request.epochs, request.every, subset)
    activation = request.activation_tag.strip() or guess_activation_tag(version.dataset)
    prompts = [p for p in request.prompts if p.strip()]
    if not prompts:
        raise PlanError("prompts", f"write at least one prompt, e.g. '{activation or 'mychar'}, solo, smile, outdoors'")
    plan = ComparePlan(
        project=version.project,
        version=version.version,
        epochs=chosen,
        weights=parse_weights(request.weights),
        prompts=prompts,
        seeds=parse_seeds(request.seeds, rng),
        negative_prompt=request.negative_prompt,
        sampler=request.sampler,
        scheduler=request.scheduler,
        steps=int(request.steps),
        cfg_scale=float(request.cfg_scale),
        width=int(request.width),
        height=int(request.height),
        include_no_lora=request.no_lora,
        activation_tag=activation,
        version_names=[e.lora_name for e in entries] + [version.output_name],
    )
    plan.validate()
    return plan


@dataclass
class Scorer:
    """A tagger for scoring; ``vocabulary`` None = count every prompt tag."""

    tag_images: TagImages
    vocabulary: set[str] | None = None
    name: str = ""


def compare_version(
    request: CompareRequest,
    version,
    render: Callable[[ComparePlan, CellJob], RenderedCell | None],
    *,
    compose: Compose | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
    scorer: Scorer | None = None,
    before_render: Callable[[ComparePlan, Sequence[GridJob]], list[str]] | None = None,
) -> tuple[ComparePlan, CompareResult]:
    """Plan, render (``render(plan, cell)``) into ``version.compare``, save, score. ``before_render`` (e.g. make the
    LoRAs reachable) may return notes for the result."""
    plan = build_plan(request, version)
    grids = expand(plan)
    notes = before_render(plan, grids) if before_render else []
    traits: list[str] = []
    source = "none"
    if request.score and scorer is not None:
        explicit = [t for t in request.traits.split(",") if t.strip()] or list(version.read_info().get("traits", []))
        traits, source, problems = collect_traits(
            explicit=explicit,
            dataset=version.dataset,
            tag_images=scorer.tag_images,
            threshold=request.threshold,
            activation_tag=plan.activation_tag,
        )
        notes += problems
    result = run_comparison(
        plan,
        grids,
        lambda cell: render(plan, cell),
        version.compare,
        compose=compose,
        should_stop=should_stop,
        progress=progress,
        tag_images=scorer.tag_images if request.score and scorer is not None else None,
        traits=traits,
        traits_source=source,
        threshold=request.threshold,
        vocabulary=scorer.vocabulary if scorer is not None else None,
    )
    if not request.score:
        result.notes = [n for n in result.notes if "no tagger" not in n] + ["scoring turned off"]
    result.notes = notes + result.notes
    missing = plan.prompts_missing_activation_tag()
    if missing:
        result.notes.append(f"prompts without the activation tag {plan.activation_tag!r}: {missing}")
    save_result(result)
    return plan, result
