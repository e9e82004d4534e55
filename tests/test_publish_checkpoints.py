"""publish.py: epochs become visible in the LoRA folder under their own names, by copy, hard link or symlink."""

import os

import pytest

from lib_lora_train.publish import PublishError, publish_checkpoints, publish_folder, unpublish


@pytest.fixture
def checkpoints(tmp_path):
    folder = tmp_path / "outputs" / "checkpoints"
    folder.mkdir(parents=True)
    files = []
    for epoch in (1, 2):
        path = folder / f"alice-v1-{epoch:06d}.safetensors"
        path.write_bytes(b"epoch %d" % epoch)
        files.append(path)
    return files


@pytest.mark.parametrize("mode", ["copy", "hardlink", "symlink"])
def test_each_mode_makes_the_epochs_readable_under_their_names(tmp_path, checkpoints, mode):
    lora_dir = tmp_path / "Lora"
    result = publish_checkpoints(checkpoints, lora_dir, subfolder="train_tools", mode=mode)
    assert [p.name for p in result.published] == ["alice-v1-000001.safetensors", "alice-v1-000002.safetensors"]
    assert (lora_dir / "train_tools" / "alice-v1-000002.safetensors").read_bytes() == b"epoch 2"
    target = lora_dir / "train_tools" / "alice-v1-000001.safetensors"
    if mode == "symlink":
        assert target.is_symlink()
    elif mode == "hardlink":
        assert os.path.samefile(target, checkpoints[0])
    else:
        assert not target.is_symlink() and not os.path.samefile(target, checkpoints[0])


def test_republishing_replaces_a_stale_epoch(tmp_path, checkpoints):
    lora_dir = tmp_path / "Lora"
    publish_checkpoints(checkpoints, lora_dir, subfolder="", mode="copy")
    checkpoints[0].write_bytes(b"retrained")
    publish_checkpoints(checkpoints[:1], lora_dir, subfolder="", mode="copy")
    assert (lora_dir / "alice-v1-000001.safetensors").read_bytes() == b"retrained"
    assert not list(lora_dir.glob(".*publishing"))


def test_off_publishes_nothing(tmp_path, checkpoints):
    assert publish_checkpoints(checkpoints, tmp_path / "Lora", subfolder="x", mode="off").published == []
    assert not (tmp_path / "Lora").exists()


def test_a_missing_checkpoint_is_noted_and_the_rest_published(tmp_path, checkpoints):
    checkpoints[0].unlink()
    result = publish_checkpoints(checkpoints, tmp_path / "Lora", subfolder="", mode="copy")
    assert [p.name for p in result.published] == ["alice-v1-000002.safetensors"]
    assert "not found" in result.notes[0]


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", ".hidden", "ok/.."])
def test_subfolder_cannot_escape_the_lora_folder(tmp_path, bad):
    with pytest.raises(PublishError, match="plain folder name"):
        publish_folder(tmp_path, bad)


def test_unknown_mode_is_refused(tmp_path, checkpoints):
    with pytest.raises(PublishError, match="copy, hardlink, symlink"):
        publish_checkpoints(checkpoints, tmp_path, subfolder="", mode="move")


def test_unpublish_removes_only_the_named_files(tmp_path, checkpoints):
    lora_dir = tmp_path / "Lora"
    publish_checkpoints(checkpoints, lora_dir, subfolder="t", mode="symlink")
    (lora_dir / "t" / "mine.safetensors").write_bytes(b"user file")
    removed = unpublish(["alice-v1-000001.safetensors"], lora_dir, subfolder="t")
    assert [p.name for p in removed] == ["alice-v1-000001.safetensors"]
    assert sorted(p.name for p in (lora_dir / "t").iterdir()) == ["alice-v1-000002.safetensors", "mine.safetensors"]
    assert checkpoints[0].exists()  # the version's own file is untouched
