"""The project store: layout, create/list/clone/delete to the trash, settings, checkpoints and dataset snapshots."""

from __future__ import annotations

import json

import pytest
from dataset_image_makers import write_caption, write_png

from lib_lora_train.dataset import scan_dataset
from lib_lora_train.settings import SettingsError, TrainSettings
from lib_lora_train.store import ProjectStore, StoreError, VersionPaths


def _store(tmp_path):
    return ProjectStore(tmp_path / "outputs" / "train_tools")


def test_create_version_makes_the_documented_layout(tmp_path):
    store = _store(tmp_path)
    paths = store.create_version("mychar", "v1")
    assert paths.path == store.root / "mychar" / "versions" / "v1"
    for sub in ("dataset", "checkpoints", "samples", "logs", "compare"):
        assert (paths.path / sub).is_dir()
    assert paths.config == paths.path / "config.json" and not paths.config.exists()
    assert paths.output_name == "mychar-v1"
    assert paths.checkpoint_file(1) == paths.checkpoints / "mychar-v1-000001.safetensors"
    assert paths.checkpoint_file(None) == paths.checkpoints / "mychar-v1.safetensors"
    assert paths.read_info()["created"]
    with pytest.raises(StoreError, match="already exists"):
        store.create_version("mychar", "v1")


def test_bad_names_never_touch_the_disk(tmp_path):
    store = _store(tmp_path)
    for project, version in [("../evil", "v1"), ("ok", "../../x"), (".trash", "v1"), ("a/b", "v")]:
        with pytest.raises(StoreError):
            store.create_version(project, version)
    assert not store.root.exists() or list(store.root.rglob("*")) == []
    with pytest.raises(StoreError):
        VersionPaths(tmp_path, "ok", "..")


def test_version_must_exist(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(StoreError, match="no project"):
        store.version("ghost", "v1")
    store.create_version("real", "v1")
    with pytest.raises(StoreError, match="no version"):
        store.version("real", "v2")
    assert store.version("real", "v1").version == "v1"


def test_settings_round_trip_and_config_holds_only_settings(tmp_path):
    paths = _store(tmp_path).create_version("p", "v1")
    settings = TrainSettings(rank=8, alpha=4.0, epochs=3, sample_prompts=["mychar, smile"])
    paths.save_settings(settings)
    assert json.loads(paths.config.read_text()) == settings.to_dict()
    assert paths.load_settings() == settings


def test_broken_config_gives_a_clear_error(tmp_path):
    paths = _store(tmp_path).create_version("p", "v1")
    with pytest.raises(StoreError, match="no settings"):
        paths.load_settings()
    paths.config.write_text("{not json")
    with pytest.raises(StoreError, match="config.json"):
        paths.load_settings()
    paths.config.write_text(json.dumps({"rank": 0}))
    with pytest.raises(SettingsError, match="rank"):
        paths.load_settings()


def test_list_checkpoints_orders_epochs_and_puts_the_final_last(tmp_path):
    paths = _store(tmp_path).create_version("p", "v1")
    for epoch in (10, 2, 1):
        paths.checkpoint_file(epoch).write_bytes(b"x")
    paths.checkpoint_file(None).write_bytes(b"x")
    (paths.checkpoints / ".p-v1.safetensors.tmp123.safetensors").write_bytes(b"")  # a save in progress
    (paths.checkpoints / "notes.txt").write_text("ignored")
    assert [epoch for epoch, _ in paths.list_checkpoints()] == [1, 2, 10, None]


def test_list_projects_shows_versions_and_skips_the_trash(tmp_path):
    store = _store(tmp_path)
    a1 = store.create_version("alpha", "v1")
    store.create_version("alpha", "v2")
    store.create_version("beta", "first")
    a1.save_settings(TrainSettings())
    a1.checkpoint_file(1).write_bytes(b"x")
    store.delete_version("beta", "first")
    (store.root / "stray.txt").write_text("not a project")

    listing = {p.name: p for p in store.list_projects()}
    assert sorted(listing) == ["alpha", "beta"]
    alpha = {v.name: v for v in listing["alpha"].versions}
    assert alpha["v1"].has_config and alpha["v1"].checkpoints == [a1.checkpoint_file(1)]
    assert not alpha["v2"].has_config and alpha["v2"].checkpoints == []
    assert listing["beta"].versions == []
    assert _store(tmp_path / "elsewhere").list_projects() == []


def test_delete_moves_to_the_trash_and_never_overwrites(tmp_path):
    store = _store(tmp_path)
    first = store.create_version("p", "v1")
    first.checkpoint_file(1).write_bytes(b"first")
    trashed_first = store.delete_version("p", "v1")
    store.create_version("p", "v1").checkpoint_file(1).write_bytes(b"second")
    trashed_second = store.delete_version("p", "v1")  # same second: must not collide
    assert trashed_first != trashed_second
    assert trashed_first.parent == store.root / ".trash" / "p"
    assert trashed_first.name.startswith("v1-")
    contents = {(t / "checkpoints" / "p-v1-000001.safetensors").read_bytes() for t in (trashed_first, trashed_second)}
    assert contents == {b"first", b"second"}
    assert not store.has_version("p", "v1")

    trashed_project = store.delete_project("p")
    assert trashed_project.parent == store.root / ".trash" and trashed_project.name.startswith("p-")
    assert not (store.root / "p").exists()
    with pytest.raises(StoreError):
        store.delete_project("p")


def _make_dataset(folder):
    (folder / "10_mychar").mkdir(parents=True)
    write_caption(write_png(folder / "10_mychar" / "a.png"), "mychar, smile")
    write_png(folder / "10_mychar" / "b.png")
    write_caption(write_png(folder / "10_mychar" / "c.png"), "mychar", ".caption")
    write_caption(write_png(folder / "10_mychar" / "D.png"), "mychar, shouting", ".TXT")
    (folder / "10_mychar" / "notes.md").write_text("not copied")
    return folder


def test_snapshot_keeps_repeat_folders_and_scans_like_the_source(tmp_path):
    src = _make_dataset(tmp_path / "src")
    paths = _store(tmp_path).create_version("p", "v1")
    assert paths.snapshot_dataset(src) == paths.dataset
    assert sorted(p.name for p in (paths.dataset / "10_mychar").iterdir()) == [
        "D.TXT",
        "D.png",
        "a.png",
        "a.txt",
        "b.png",
        "c.caption",
        "c.png",
    ]
    original, snapshot = scan_dataset(src), scan_dataset(paths.dataset)
    assert snapshot.dataset_dirs == original.dataset_dirs == {"10_mychar": {"n_repeats": 10, "img_count": 4}}
    assert snapshot.tag_frequency == original.tag_frequency
    assert paths.read_info()["dataset_source"] == str(src.resolve())


def test_snapshot_of_a_single_repeat_folder_keeps_its_name(tmp_path):
    src = _make_dataset(tmp_path / "src") / "10_mychar"
    paths = _store(tmp_path).create_version("p", "v1")
    paths.snapshot_dataset(src)
    assert (paths.dataset / "10_mychar" / "a.png").is_file()
    assert scan_dataset(paths.dataset).items[0].repeats == 10


def test_new_snapshot_trashes_the_old_one_and_empty_source_keeps_it(tmp_path):
    src = _make_dataset(tmp_path / "src")
    store = _store(tmp_path)
    paths = store.create_version("p", "v1")
    paths.snapshot_dataset(src)
    (paths.dataset / "10_mychar" / "a.txt").write_text("edited in the snapshot")
    paths.snapshot_dataset(src)
    assert (paths.dataset / "10_mychar" / "a.txt").read_text() == "mychar, smile"
    trashed = list((store.root / ".trash" / "p").iterdir())
    assert len(trashed) == 1 and (trashed[0] / "10_mychar" / "a.txt").read_text() == "edited in the snapshot"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(StoreError, match="no images"):
        paths.snapshot_dataset(empty)
    assert (paths.dataset / "10_mychar" / "a.png").is_file()
    assert paths.snapshot_dataset(paths.dataset) == paths.dataset  # training from the snapshot itself
    with pytest.raises(StoreError, match="contain each other"):
        paths.snapshot_dataset(paths.path)


def test_clone_copies_settings_and_dataset_but_no_results(tmp_path):
    store = _store(tmp_path)
    src = store.create_version("p", "v1")
    src.save_settings(TrainSettings(rank=4, alpha=2.0))
    src.snapshot_dataset(_make_dataset(tmp_path / "src"))
    src.checkpoint_file(1).write_bytes(b"x")
    (src.samples / "s.png").write_bytes(b"x")
    (src.logs / "loss.csv").write_text("step\n")

    clone = store.clone_version("p", "v1", "v2")
    assert clone.load_settings() == src.load_settings()
    assert (clone.dataset / "10_mychar" / "a.txt").read_text() == "mychar, smile"
    assert clone.list_checkpoints() == [] and list(clone.samples.iterdir()) == [] and list(clone.logs.iterdir()) == []
    info = clone.read_info()
    assert info["cloned_from"] == "v1" and info["version"] == "v2"
    assert info["dataset_source"] == src.read_info()["dataset_source"]
    with pytest.raises(StoreError, match="already exists"):
        store.clone_version("p", "v1", "v2")
    with pytest.raises(StoreError):
        store.clone_version("p", "nope", "v3")
    assert [v.name for v in store.list_versions("p")] == ["v1", "v2"]


def test_snapshot_of_an_unchanged_folder_is_not_copied_again(tmp_path):
    src = _make_dataset(tmp_path / "src")
    store = _store(tmp_path)
    paths = store.create_version("p", "v1")
    paths.snapshot_dataset(src)
    marker = paths.dataset / "10_mychar" / "a.png"
    inode = marker.stat().st_ino
    paths.snapshot_dataset(src)  # a second run of the same version on the same folder
    assert marker.stat().st_ino == inode and not (store.root / ".trash").exists()

    (src / "10_mychar" / "a.txt").write_text("mychar, smile, new tag")
    paths.snapshot_dataset(src)
    assert (paths.dataset / "10_mychar" / "a.txt").read_text() == "mychar, smile, new tag"
    assert len(list((store.root / ".trash" / "p").iterdir())) == 1
