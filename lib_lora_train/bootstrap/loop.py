"""The bootstrap loop itself, phase by phase, on whatever host lends it a trainer, a renderer and a tagger.

A round lives in the version whose LoRA it trains: train -> generate (the view matrix with that LoRA) -> score ->
select (automatic, or the user's keep/reject) -> grow (the next version's dataset). After the last target the next
version trains once more with the character preset and the loop is done. Every phase ends with the state written,
and every phase can be re-entered: a restart resumes where the files say it stopped (candidates already rendered
are not rendered again; a round whose training finished is not trained again).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from lib_lora_train.bootstrap.captions import caption_for
from lib_lora_train.bootstrap.prompts import view_matrix
from lib_lora_train.bootstrap.rounds import LoopState, RoundFiles, grow, read_state, write_state
from lib_lora_train.bootstrap.scoring import CandidateScore, mark_duplicates, ranked, score_tags
from lib_lora_train.bootstrap.selection import auto_select, needed
from lib_lora_train.fileio import atomic_write_bytes, atomic_write_text
from lib_lora_train.settings import TrainSettings
from lib_lora_train.store import ProjectStore, VersionPaths
from lib_lora_train.train.plan import preset_settings, split_repeat_folder, suggest_repeats

POINTER = "bootstrap.json"  # <project>/bootstrap.json: which version the loop is in
DEFAULT_WEIGHT = 0.8


@dataclass
class LoopHooks:
    """What the host gives the loop. ``train`` returns the epoch checkpoints it wrote (empty when stopped);
    ``render`` one image for a prompt with ``<lora:…>`` and a seed (None when interrupted); ``tag`` the tagger's
    ``{tag: confidence}`` per image (None: no tagger, candidates are ranked by novelty only)."""

    train: Callable[[VersionPaths, TrainSettings], list[Path]]
    render: Callable[[str, int], Image.Image | None]
    tag: Callable[[Sequence[Image.Image]], list[dict[str, float]]] | None = None
    should_stop: Callable[[], bool] = lambda: False
    report: Callable[[str], None] = lambda message: None
    image_hash: Callable[[Image.Image], int] | None = None


# what ``start`` takes: the loop's settings, before any round (the phase and round fields keep their defaults)
LoopConfig = LoopState


class LoopError(ValueError):
    """Something the loop cannot go on from; the message says what to do."""


def current_version(store: ProjectStore, project: str) -> VersionPaths | None:
    path = store.project_path(project) / POINTER
    if not path.is_file():
        return None
    return store.version(project, json.loads(path.read_text(encoding="utf-8"))["version"])


def _point(store: ProjectStore, project: str, version: str) -> None:
    atomic_write_text(store.project_path(project) / POINTER, json.dumps({"version": version}) + "\n")


def dataset_size(version: VersionPaths) -> int:
    return sum(1 for p in version.dataset.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))


def start(store: ProjectStore, project: str, version: str, images: Sequence[Path], captions: Sequence[str],
          config: LoopConfig) -> VersionPaths:  # fmt: skip
    """The first version: the start images with their captions in one ``<repeats>_<activation>`` folder."""
    if len(images) < 2 or len(images) != len(captions):
        raise LoopError("the loop starts from 2-8 images (or one image cut into crops), each with a caption")
    paths = store.create_version(project, version)
    folder = paths.dataset / f"{suggest_repeats(len(images))}_{_folder_name(config.activation_tag)}"
    folder.mkdir(parents=True)
    for image, caption in zip(images, captions, strict=True):
        buffer = io.BytesIO()
        Image.open(image).convert("RGB").save(buffer, format="PNG")
        atomic_write_bytes(folder / f"{Path(image).stem}.png", buffer.getvalue())
        atomic_write_text(folder / f"{Path(image).stem}.txt", caption)
    write_state(paths, LoopState(**{**config.__dict__, "round": 1, "phase": "train"}))
    _point(store, project, version)
    return paths


def _folder_name(activation: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in activation) or "subject"


def settings_for(state: LoopState, version: VersionPaths, *, final: bool) -> TrainSettings:
    """The bootstrap preset for a round (the character preset for the final version), at the loop's resolution,
    with the user's own settings on top; repeats come from the dataset folder's name."""
    settings = preset_settings("character" if final else "bootstrap", arch=state.arch)
    settings = settings.replace(resolution=state.resolution or settings.resolution, save_every=1,
                                seed=state.seed + state.round)  # fmt: skip
    return settings.replace(**state.base)  # what the user set wins over the preset


def round_prompts(state: LoopState):
    """The round's view matrix; each round draws new seeds, or it would render the images it kept last time again
    (and find them all near-duplicates of the dataset)."""
    seed = state.seed + 1000 * (state.round - 1)
    return view_matrix(state.activation_tag, state.traits, state.views, state.seeds_per_view, seed)


class BootstrapLoop:
    def __init__(self, store: ProjectStore, project: str, hooks: LoopHooks):
        self.store, self.project, self.hooks = store, project, hooks

    def version(self) -> VersionPaths:
        version = current_version(self.store, self.project)
        if version is None:
            raise LoopError(f"project {self.project!r} has no bootstrap loop; start one first")
        return version

    def state(self) -> LoopState:
        state = read_state(self.version())
        if state is None:
            raise LoopError(f"{self.version().path}: the loop's state.json is missing")
        return state

    def run(self) -> LoopState:
        """Run phases until the loop is done, stopped, or waits for the user's selection (a manual round)."""
        while True:
            state = self.state()
            if state.phase == "done" or self.hooks.should_stop():
                return state
            if not self.step():
                return self.state()

    def step(self) -> bool:
        """Run the current phase to its end; False when it could not finish (stopped, interrupted)."""
        version, state = self.version(), self.state()
        name, started = state.phase, time.perf_counter()
        self.model_seconds = 0.0
        done = getattr(self, f"_{name}")(version, state)
        if done:
            # seconds per phase, and how much of it the model took (training, rendering, tagging): the rest is the
            # loop's own work (hashing, scoring, files), which must stay a small share of a round
            state.timings.append({"round": state.round, "phase": name, "seconds": round(time.perf_counter() - started, 3),
                                  "model_seconds": round(self.model_seconds, 3)})  # fmt: skip
            write_state(version, state)
        return done

    def _timed(self, fn, *args):
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.model_seconds += time.perf_counter() - started

    # --- phases ----------------------------------------------------------------------------------------------

    def _is_final(self, version: VersionPaths, state: LoopState) -> bool:
        return state.round > len(state.targets) or dataset_size(version) >= state.targets[-1]

    def _train(self, version: VersionPaths, state: LoopState) -> bool:
        final = self._is_final(version, state)
        if not version.checkpoint_file(None).is_file():  # a stopped run has epochs but no final file: train again
            settings = settings_for(state, version, final=final)
            version.save_settings(settings)
            self.hooks.report(f"round {state.round}: training {version.version} on {dataset_size(version)} images"
                              + (" (final, character preset)" if final else ""))  # fmt: skip
            if not self._timed(self.hooks.train, version, settings):
                return False
        state.phase = "done" if final else "generate"
        return True

    def _lora(self, version: VersionPaths, state: LoopState) -> str:
        epochs = version.list_checkpoints()
        if not epochs:
            raise LoopError(f"{version.version} has no checkpoints to generate with; train it first")
        chosen = next((p for e, p in epochs if state.epoch is not None and e == state.epoch), epochs[-1][1])
        return chosen.stem

    def _generate(self, version: VersionPaths, state: LoopState) -> bool:
        files = RoundFiles(version, state.round)
        prompts = round_prompts(state)
        lora, weight = self._lora(version, state), state.weight if state.weight is not None else DEFAULT_WEIGHT
        todo = files.missing(prompts)
        self.hooks.report(f"round {state.round}: {len(todo)} of {len(prompts)} candidates to render with {lora}")
        for prompt in todo:
            if self.hooks.should_stop():
                return False
            text = prompt.with_lora(lora, weight)
            image = self._timed(self.hooks.render, text, prompt.seed)
            if image is None:
                return False
            info = PngInfo()
            info.add_text("parameters", f"{text}\nSeed: {prompt.seed}, Bootstrap view: {prompt.view}")
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", pnginfo=info)
            atomic_write_bytes(files.candidate_file(prompt), buffer.getvalue())
        state.phase = "score"
        return True

    def _score(self, version: VersionPaths, state: LoopState) -> bool:
        from lib_lora_train.tag_editor.image_fixes import phash

        files = RoundFiles(version, state.round)
        prompts = round_prompts(state)
        present = [p for p in prompts if files.candidate_file(p).is_file()]
        images = [Image.open(files.candidate_file(p)).convert("RGB") for p in present]
        tags = self._timed(self.hooks.tag, images) if self.hooks.tag is not None and images else [{} for _ in images]
        hash_of = self.hooks.image_hash or phash
        scores = []
        for prompt, image, confidences in zip(present, images, tags, strict=True):
            name = files.candidate_file(prompt).name
            if self.hooks.tag is None:  # no tagger: nothing to check the traits by, novelty decides alone
                score = CandidateScore(name, prompt.view, prompt.seed, 1.0, None, score=1.0)
            else:
                score = score_tags(name, prompt.view, prompt.seed, confidences, state.traits)
            score.hash = hash_of(image)
            scores.append(score)
        dataset = {p.name: hash_of(Image.open(p).convert("RGB")) for p in version.dataset.rglob("*.png")}
        mark_duplicates(scores, dataset)
        files.save_scores(ranked(scores))
        _write_tags(files, present, tags)
        state.phase = "select"
        return True

    def _select(self, version: VersionPaths, state: LoopState) -> bool:
        files = RoundFiles(version, state.round)
        if files.load_selection() is None:
            if not state.auto_select:
                return False  # waits for the user's keep/reject (the tab or the API write selection.json)
            self.select_automatically(version, state)
        state.phase = "grow"
        return True

    def select_automatically(self, version: VersionPaths, state: LoopState) -> list[str]:
        files = RoundFiles(version, state.round)
        scores = files.load_scores() or []
        target = state.targets[min(state.round, len(state.targets)) - 1]
        chosen = [s.file for s in auto_select(scores, needed(target, dataset_size(version)))]
        files.save_selection(chosen, [s.file for s in scores if s.file not in chosen], auto=True, target=target)
        self.hooks.report(f"round {state.round}: kept {len(chosen)} of {len(scores)} candidates")
        return chosen

    def _grow(self, version: VersionPaths, state: LoopState) -> bool:
        files = RoundFiles(version, state.round)
        kept = (files.load_selection() or {}).get("kept", [])
        if not kept:
            raise LoopError(f"round {state.round} kept no candidates; select some (or generate more seeds) first")
        child = _child_of(self.store, self.project, version, state.round)  # a grow cut short left it: reuse it
        if child is None:
            child = self.store.create_version(self.project, _next_name(self.store, self.project, version.version))
        child_name = child.version
        tags = _read_tags(files)
        views = {s.file: s.view for s in files.load_scores() or []}
        final = dataset_size(version) + len(kept) >= state.targets[-1] or state.round >= len(state.targets)
        captions = {name: caption_for(state.activation_tag, tags.get(name, {}), views.get(name, ""), state.traits,
                                      prune_traits=final) for name in kept}  # fmt: skip
        size = dataset_size(version) + len(kept)
        folder = next((split_repeat_folder(p.name)[1] for p in version.dataset.iterdir() if p.is_dir()), "subject")
        grow(version, child, files, captions, folder_name=folder, repeats=suggest_repeats(size))
        state.phase = "done"  # this version's round is over
        write_state(version, state)
        child_state = LoopState(**{**state.__dict__, "round": state.round + 1, "phase": "train", "notes": state.notes})
        write_state(child, child_state)
        _point(self.store, self.project, child_name)
        self.hooks.report(f"round {state.round}: {child_name} has {size} images")
        return not self.hooks.should_stop()


def _child_of(store: ProjectStore, project: str, parent: VersionPaths, round_number: int) -> VersionPaths | None:
    for info in store.list_versions(project):
        paths = store.version(project, info.name)
        data = paths.read_info()
        if data.get("parent") == parent.version and data.get("bootstrap_round") == round_number:
            return paths
        if data.get("bootstrap_parent") == parent.version and data.get("bootstrap_round") == round_number:
            return paths
    return None


def _next_name(store: ProjectStore, project: str, name: str) -> str:
    stem = name.rstrip("0123456789") or "v"
    number = int(name[len(stem) :] or 1) + 1
    while store.has_version(project, f"{stem}{number}"):
        number += 1
    return f"{stem}{number}"


def _write_tags(files: RoundFiles, prompts, tags: Sequence[dict[str, float]]) -> None:
    data = {
        files.candidate_file(p).name: {k: round(v, 4) for k, v in t.items()} for p, t in zip(prompts, tags, strict=True)
    }
    atomic_write_text(files.folder / "tags.json", json.dumps(data) + "\n")


def _read_tags(files: RoundFiles) -> dict[str, dict[str, float]]:
    path = files.folder / "tags.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
