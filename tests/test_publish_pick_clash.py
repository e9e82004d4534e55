"""The published final file and the published Epoch Compare pick share ``<project>-<version>``: only one may stay."""

from collections import Counter

import pytest

from lib_lora_train.compare.pick import pick_version
from lib_lora_train.publish import publish_checkpoints
from lib_lora_train.store import ProjectStore

EPOCHS = ["alice-v1-000001", "alice-v1-000002"]


@pytest.fixture
def version(tmp_path):
    version = ProjectStore(tmp_path / "store").create_version("alice", "v1")
    version.checkpoints.mkdir(parents=True, exist_ok=True)
    for epoch in (1, 2, None):
        version.checkpoint_file(epoch).write_bytes(f"weights of epoch {epoch}".encode())
    return version


def _stems(lora_dir):
    """What the WebUI's LoRA list would show: file stems, each of which must be unique."""
    return Counter(p.stem for p in lora_dir.rglob("*.safetensors"))


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_publishing_a_pick_removes_the_published_final_and_later_publishes_leave_it_out(tmp_path, version, mode):
    lora_dir = tmp_path / "Lora"
    files = [path for _, path in version.list_checkpoints()]
    publish_checkpoints(files, lora_dir, subfolder="train_tools", mode=mode)
    assert _stems(lora_dir) == Counter({"alice-v1": 1, **dict.fromkeys(EPOCHS, 1)})

    _, _, published = pick_version(version, 1, 0.8, lora_dir=lora_dir)
    assert not (lora_dir / "train_tools" / "alice-v1.safetensors").exists()
    assert any("removed" in note and "train_tools" in note for note in published.notes)
    assert version.checkpoint_file(None).read_bytes() == b"weights of epoch None"  # the version's own file stays

    # a re-run (or Epoch Compare making its epochs reachable) publishes again: the pick keeps the name
    again = publish_checkpoints(files, lora_dir, subfolder="train_tools", mode=mode)
    assert sorted(p.stem for p in again.published) == EPOCHS
    assert any("alice-v1.safetensors: not published" in note for note in again.notes)
    assert _stems(lora_dir) == Counter({"alice-v1": 1, **dict.fromkeys(EPOCHS, 1)})
    assert (lora_dir / "alice-v1.safetensors").read_bytes() == b"weights of epoch 1"
    for stem in EPOCHS:
        assert (lora_dir / "train_tools" / f"{stem}.safetensors").is_file()


def test_publishing_into_the_lora_folder_itself_never_overwrites_the_pick(tmp_path, version):
    lora_dir = tmp_path / "Lora"
    pick_version(version, 2, 1.0, lora_dir=lora_dir)
    publish_checkpoints([p for _, p in version.list_checkpoints()], lora_dir, subfolder="", mode="copy")
    assert (lora_dir / "alice-v1.safetensors").read_bytes() == b"weights of epoch 2"
    assert _stems(lora_dir) == Counter({"alice-v1": 1, **dict.fromkeys(EPOCHS, 1)})


def test_without_a_pick_the_final_file_is_published_and_a_users_file_is_only_noted(tmp_path, version):
    lora_dir = tmp_path / "Lora"
    (lora_dir / "mine").mkdir(parents=True)
    (lora_dir / "alice-v1.safetensors").write_bytes(b"the user's own file")  # no pick sidecar: not a pick
    result = publish_checkpoints([version.checkpoint_file(None)], lora_dir, subfolder="train_tools", mode="copy")
    assert [p.name for p in result.published] == ["alice-v1.safetensors"]

    (lora_dir / "mine" / "alice-v1.safetensors").write_bytes(b"another user file")
    (lora_dir / "alice-v1.safetensors").unlink()
    _, _, published = pick_version(version, 1, 0.8, lora_dir=lora_dir)
    assert (lora_dir / "mine" / "alice-v1.safetensors").read_bytes() == b"another user file"  # never deleted
    assert any("mine" in note and "same name" in note for note in published.notes)
