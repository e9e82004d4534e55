"""Recording the pick and publishing it under a clean name with the WebUI's LoRA card metadata."""

import json

import pytest

from lib_lora_train.compare.pick import DESCRIPTION_MARK, Pick, PickError, load_pick, publish_pick, record_pick


def _pick(**kw):
    args = dict(project="proj", version="v1", epoch=3, weight=0.8, checkpoint="proj-v1-000003.safetensors")
    args.update(kw)
    return Pick(**args)


def test_pick_is_recorded_in_the_version_and_reloads(tmp_path):
    path = record_pick(tmp_path, _pick())
    assert path == tmp_path / "pick.json"
    loaded = load_pick(tmp_path)
    assert (loaded.epoch, loaded.weight, loaded.checkpoint) == (
        3,
        0.8,
        "proj-v1-000003.safetensors",
    ) and loaded.picked_at
    record_pick(tmp_path, _pick(epoch=2, weight=0.6))
    assert json.loads((tmp_path / "pick.json.bak").read_text())["epoch"] == 3  # previous pick kept
    assert load_pick(tmp_path).epoch == 2
    (tmp_path / "other").mkdir()
    assert load_pick(tmp_path / "other") is None


def test_damaged_pick_names_the_file(tmp_path):
    (tmp_path / "pick.json").write_text("{")
    with pytest.raises(PickError, match="pick.json"):
        load_pick(tmp_path)
    with pytest.raises(PickError, match="does not exist"):
        record_pick(tmp_path / "gone", _pick())


def test_publish_copies_and_writes_card_metadata(tmp_path):
    ckpt = tmp_path / "proj-v1-000003.safetensors"
    ckpt.write_bytes(b"epoch3")
    lora = tmp_path / "Lora"
    out = publish_pick(ckpt, lora, "proj-v1", _pick(), activation_text="mychar", sd_version="SD1")
    assert out.model == lora / "proj-v1.safetensors" and out.model.read_bytes() == b"epoch3"
    meta = json.loads(out.sidecar.read_text())
    # the keys the v1.10.1 LoRA card editor reads
    assert meta["preferred weight"] == 0.8 and meta["activation text"] == "mychar" and meta["sd version"] == "SD1"
    assert meta["description"].startswith(DESCRIPTION_MARK) and "weight 0.8" in meta["description"]
    assert out.backups == [] and not list(lora.glob(".*"))  # no temporary files left
    assert out.notes == []


def test_publish_warns_about_a_same_named_lora_elsewhere(tmp_path):
    ckpt = tmp_path / "e3.safetensors"
    ckpt.write_bytes(b"epoch3")
    lora = tmp_path / "Lora"
    (lora / "train_tools").mkdir(parents=True)
    (lora / "train_tools" / "proj-v1.safetensors").write_bytes(b"final")  # the published final epoch
    out = publish_pick(ckpt, lora, "proj-v1", _pick())
    assert len(out.notes) == 1 and "train_tools" in out.notes[0]


def test_republish_keeps_user_keys_backups_and_one_description_line(tmp_path):
    ckpt3, ckpt5 = tmp_path / "e3.safetensors", tmp_path / "e5.safetensors"
    ckpt3.write_bytes(b"epoch3")
    ckpt5.write_bytes(b"epoch5")
    lora = tmp_path / "Lora"
    first = publish_pick(ckpt3, lora, "proj-v1", _pick(), activation_text="mychar")
    meta = json.loads(first.sidecar.read_text())
    meta["notes"] = "my notes"
    meta["description"] += "\nMy own words."
    first.sidecar.write_text(json.dumps(meta))
    second = publish_pick(ckpt5, lora, "proj-v1", _pick(epoch=5, weight=0.6, checkpoint="e5.safetensors"))
    assert second.model.read_bytes() == b"epoch5"
    assert (lora / "proj-v1.safetensors.bak").read_bytes() == b"epoch3"
    assert json.loads((lora / "proj-v1.json.bak").read_text())["notes"] == "my notes"
    meta = json.loads(second.sidecar.read_text())
    assert meta["notes"] == "my notes" and meta["activation text"] == "mychar" and meta["preferred weight"] == 0.6
    lines = meta["description"].splitlines()
    assert sum(line.startswith(DESCRIPTION_MARK) for line in lines) == 1 and "epoch 5" in lines[0]
    assert lines[-1] == "My own words."


def test_publish_refuses_bad_names_and_missing_files(tmp_path):
    ckpt = tmp_path / "c.safetensors"
    ckpt.write_bytes(b"x")
    with pytest.raises(PickError, match="file name"):
        publish_pick(ckpt, tmp_path / "Lora", "../evil", _pick())
    with pytest.raises(PickError, match="missing"):
        publish_pick(tmp_path / "gone.safetensors", tmp_path / "Lora", "proj-v1", _pick())


def test_pick_version_finds_the_checkpoint_records_and_publishes(tmp_path):
    from lib_lora_train.compare.pick import pick_version
    from lib_lora_train.store import ProjectStore

    version = ProjectStore(tmp_path / "store").create_version("alice", "v1")
    version.checkpoints.mkdir(parents=True, exist_ok=True)
    for epoch in (1, 2, None):
        version.checkpoint_file(epoch).write_bytes(f"e{epoch}".encode())
    pick, path, published = pick_version(version, 2, 0.7, lora_dir=tmp_path / "Lora", activation_text="alice_x")
    assert path == version.path / "pick.json" and pick.checkpoint == "alice-v1-000002.safetensors"
    assert published.model == tmp_path / "Lora" / "alice-v1.safetensors" and published.model.read_bytes() == b"e2"
    assert json.loads(published.sidecar.read_text())["activation text"] == "alice_x"
    pick, _, published = pick_version(version, None, 1.0)
    assert pick.epoch is None and published is None and load_pick(version.path).checkpoint == "alice-v1.safetensors"
    with pytest.raises(PickError, match="epoch 9.*1, 2, final"):
        pick_version(version, 9, 1.0)
