"""The bootstrap loop with stand-in hooks (no model): rounds grow the dataset to each target, the last version
trains with the character preset, and an interruption in any phase resumes to the same end."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from lib_lora_train.bootstrap.loop import BootstrapLoop, LoopConfig, LoopHooks, current_version, dataset_size, start
from lib_lora_train.bootstrap.rounds import RoundFiles, read_state
from lib_lora_train.store import ProjectStore

COLOURS = [(200, 30, 30), (30, 30, 200), (30, 200, 30), (200, 200, 30), (200, 30, 200), (30, 200, 200)]


class Fakes:
    """A trainer that writes epoch files, a renderer of distinct images, a tagger that sees the traits and the
    asked view; ``stop_at`` names a call (e.g. "render:3") after which the loop is told to stop."""

    def __init__(self, stop_at: str | None = None):
        self.calls: list[str] = []
        self.trained: list[tuple[str, str, int]] = []
        self.stop_at, self.stopped = stop_at, False

    def _count(self, kind: str) -> None:
        self.calls.append(kind)
        if self.stop_at == f"{kind}:{self.calls.count(kind)}":
            self.stopped = True

    def train(self, version, settings):
        self._count("train")
        self.trained.append((version.version, "character" if settings.rank == 16 else "bootstrap", settings.epochs))
        for epoch in range(1, settings.epochs):
            version.checkpoint_file(epoch).write_bytes(b"x")
        version.checkpoint_file(None).write_bytes(b"x")
        return [p for _, p in version.list_checkpoints()]

    def render(self, prompt, seed):
        self._count("render")
        if self.stopped:
            return None
        index = len([c for c in self.calls if c == "render"])
        image = Image.new("RGB", (64, 64), COLOURS[index % len(COLOURS)])
        for x in range(0, 64, 1 + index % 7):  # a pattern per call, so no two candidates hash alike
            image.putpixel((x, (x * index) % 64), (255, 255, 255))
        return image

    def tag(self, images):
        self._count("tag")
        return [{"fox_ears": 0.9, "blonde_hair": 0.8, "from_side": 0.7, "solo": 0.9} for _ in images]

    def hooks(self) -> LoopHooks:
        return LoopHooks(train=self.train, render=self.render, tag=self.tag, should_stop=lambda: self.stopped,
                         image_hash=lambda image: hash(image.tobytes()) & ((1 << 64) - 1))  # fmt: skip


def _start(tmp_path, images=4):
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = ProjectStore(tmp_path / "store")
    files = []
    for i in range(images):
        path = tmp_path / f"crop{i}.png"
        Image.new("RGB", (64, 64), COLOURS[i]).save(path)
        files.append(path)
    config = LoopConfig("alicechan", ["fox ears", "blonde hair"], [6, 8], ["from side", "from behind"], 2, seed=5,
                        resolution=64, base={"epochs": 2})  # fmt: skip
    start(store, "alice", "v1", files, ["alicechan, fox ears"] * images, config)
    return store


def _summary(store):
    out = {}
    for info in store.list_versions("alice"):
        version = store.version("alice", info.name)
        state = read_state(version)
        out[info.name] = (dataset_size(version), state.round, state.phase, version.read_info().get("parent"))
    return out


def test_rounds_grow_to_each_target_and_the_last_version_trains_the_character(tmp_path):
    store = _start(tmp_path)
    fakes = Fakes()
    state = BootstrapLoop(store, "alice", fakes.hooks()).run()
    assert state.phase == "done"
    assert _summary(store) == {"v1": (4, 1, "done", None), "v2": (6, 2, "done", "v1"), "v3": (8, 3, "done", "v2")}
    assert fakes.trained == [("v1", "bootstrap", 2), ("v2", "bootstrap", 2), ("v3", "character", 2)]
    assert current_version(store, "alice").version == "v3"
    v1 = store.version("alice", "v1")
    round_files = RoundFiles(v1, 1)
    assert len(list(round_files.candidates.glob("*.png"))) == 4  # 2 views x 2 seeds
    selection = round_files.load_selection()
    assert selection["auto"] and len(selection["kept"]) == 2 and selection["target"] == 6
    views = {s.file: s.view for s in round_files.load_scores()}
    assert {views[name] for name in selection["kept"]} == {"from side", "from behind"}  # spread over the views
    v2 = store.version("alice", "v2")
    kept_caption = next(p for p in v2.dataset.rglob("r1-*.txt")).read_text(encoding="utf-8")
    assert kept_caption.startswith("alicechan, from ") and "fox ears" in kept_caption  # traits kept in the rounds
    v3_captions = [p.read_text(encoding="utf-8") for p in store.version("alice", "v3").dataset.rglob("r2-*.txt")]
    assert v3_captions and all("fox ears" not in c for c in v3_captions)  # pruned for the character round
    assert json.loads((v1.path / "bootstrap" / "round-1" / "tags.json").read_text())


@pytest.mark.parametrize("stop_at", ["train:1", "render:2", "tag:1", "train:2", "render:6", "train:3"])
def test_an_interruption_in_any_phase_resumes_to_the_same_end(tmp_path, stop_at):
    reference = _start(tmp_path / "straight")
    BootstrapLoop(reference, "alice", Fakes().hooks()).run()
    store = _start(tmp_path / "stopped")
    fakes = Fakes(stop_at)
    first = BootstrapLoop(store, "alice", fakes.hooks()).run()
    assert first.phase != "done" or stop_at == "train:3"
    again = Fakes()
    assert BootstrapLoop(store, "alice", again.hooks()).run().phase == "done"  # a new process, the files only
    assert _summary(store) == _summary(reference)
    rendered = fakes.calls.count("render") + again.calls.count("render")
    assert rendered <= 8 + 1  # what was rendered is not rendered again (one call may have been cut off)


def test_a_manual_round_waits_for_the_users_selection(tmp_path):
    store = ProjectStore(tmp_path / "store")
    images = []
    for i in range(2):
        images.append(tmp_path / f"{i}.png")
        Image.new("RGB", (64, 64), COLOURS[i]).save(images[-1])
    config = LoopConfig("alicechan", ["fox ears"], [4], ["from side"], 3, resolution=64, auto_select=False)
    start(store, "alice", "v1", images, ["alicechan"] * 2, config)
    loop = BootstrapLoop(store, "alice", Fakes().hooks())
    assert loop.run().phase == "select"
    v1 = store.version("alice", "v1")
    round_files = RoundFiles(v1, 1)
    names = [s.file for s in round_files.load_scores()]
    round_files.save_selection(names[:2], names[2:], auto=False, target=4)
    assert loop.run().phase == "done"
    assert dataset_size(store.version("alice", "v2")) == 4
