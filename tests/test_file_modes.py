"""Files we write get the mode a plain ``open()`` would give under the user's umask, replaced files keep theirs, and
published copies and links are as readable as the original: another program (another user's ComfyUI sharing the
LoRA folder, a file server) must be able to read the LoRAs we make."""

from __future__ import annotations

import io
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from lib_lora_train.compare.pick import Pick, publish_pick, record_pick
from lib_lora_train.compare.run import save_png
from lib_lora_train.fileio import atomic_write_bytes, atomic_write_text
from lib_lora_train.host import SampleRequest
from lib_lora_train.lora_format.file import save_lora_file
from lib_lora_train.publish import publish_checkpoints
from lib_lora_train.settings import TrainSettings
from lib_lora_train.store import ProjectStore
from lib_lora_train.tagger.captions import write_caption
from lib_lora_train.train.saving import render_and_save_samples


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    before = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _lora(path: Path) -> Path:
    save_lora_file(path, {"lora_unet_x.lora_down.weight": torch.zeros(2, 4), "lora_unet_x.alpha": torch.tensor(2.0)},
                   {"ss_network_module": "networks.lora"})  # fmt: skip
    return path


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_atomic_writes_honour_the_umask_and_keep_a_replaced_files_mode(tmp_path, umask):
    new = tmp_path / "new.txt"
    atomic_write_text(new, "a")
    assert mode(new) == 0o666 & ~umask
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    os.chmod(kept, 0o640)
    atomic_write_bytes(kept, b"new", backup=True)
    assert kept.read_bytes() == b"new" and mode(kept) == 0o640
    assert mode(tmp_path / "kept.bin.bak") == 0o640  # the backup is the old file, mode and all
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_every_writer_of_a_training_run(tmp_path, umask):
    expected = 0o666 & ~umask
    store = ProjectStore(tmp_path / "store")
    version = store.create_version("alice", "v1")
    version.save_settings(TrainSettings())
    version.update_info(note="x")
    checkpoint = _lora(version.checkpoint_file(1))
    host = SimpleNamespace(render_samples=lambda requests: [Image.new("RGB", (4, 4))])
    samples = render_and_save_samples(host, [SampleRequest("a cat")], version.samples, 1)
    grid = version.compare / "grid.png"
    save_png(Image.new("RGB", (4, 4)), grid, {"parameters": "x"})
    chosen = Pick(project="alice", version="v1", epoch=1, weight=0.8, checkpoint=checkpoint.name, picked_at="now")
    pick = record_pick(version.path, chosen)
    for path in (version.config, version.info, checkpoint, *samples, grid, pick):
        assert mode(path) == expected, path


def test_tagger_captions_new_and_replaced(tmp_path, umask):
    fresh = tmp_path / "a.txt"
    assert write_caption(fresh, "red hair", existing=None, backup=True)
    assert mode(fresh) == 0o666 & ~umask
    old = tmp_path / "b.txt"
    old.write_text("old", encoding="utf-8")
    os.chmod(old, 0o640)
    assert write_caption(old, "old, red hair", existing="old", backup=True)
    assert mode(old) == 0o640 and mode(tmp_path / "b.txt.bak") == 0o640


@pytest.mark.parametrize("how", ["copy", "hardlink", "symlink"])
def test_published_epochs_and_picks_read_as_the_original(tmp_path, umask, how):
    checkpoint = _lora(tmp_path / "v" / "alice-v1-000001.safetensors")
    result = publish_checkpoints([checkpoint], tmp_path / "Lora", subfolder="train_tools", mode=how)
    assert result.published and mode(result.published[0]) == mode(checkpoint) == 0o666 & ~umask
    pick = Pick(project="alice", version="v1", epoch=1, weight=0.8, checkpoint=checkpoint.name, picked_at="now")
    published = publish_pick(checkpoint, tmp_path / "Lora", "alice-v1", pick, activation_text="alice")
    assert mode(published.model) == mode(checkpoint)
    assert mode(published.sidecar) == 0o666 & ~umask
    assert json.loads(published.sidecar.read_text(encoding="utf-8"))
