"""A truncated image (header fine, data cut) is reported and skipped by the trainer instead of stopping the run."""

import json

import pytest
from dataset_image_makers import write_truncated_jpeg
from safetensors import safe_open

from lib_lora_train.dataset.scan import scan_dataset
from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
from lib_lora_train.settings import TrainSettings
from lib_lora_train.store.projects import ProjectStore
from lib_lora_train.train.batches import BatchFeed
from lib_lora_train.train.latents import LatentCache
from lib_lora_train.train.runner import train_version

# 3 good images x 2 repeats = 6 per epoch = 3 steps of batch 2; the truncated one would make 8 = 4 steps
BASE = dict(resolution=64, batch_size=2, epochs=1, unet_lr=1e-3, te_lr=0.0, mixed_precision="no", seed=5)


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=2)


@pytest.fixture
def dataset(tmp_path):
    root = write_tiny_dataset(tmp_path / "data", count=3, size=64)
    # sorted between img000 and img001, so skipping it shifts the indices of the images after it
    broken = write_truncated_jpeg(root / "2_demo" / "img000b.jpg", size=128)
    (root / "2_demo" / "img000b.txt").write_text("demo, brokentag", encoding="utf-8")
    return root, broken


@pytest.mark.parametrize("cache", ["memory", "disk", "none"])
def test_a_truncated_jpeg_is_skipped_and_the_run_completes(pipe, dataset, tmp_path, cache):
    root, broken = dataset
    assert len(scan_dataset(root).items) == 4  # the header-only scan cannot see the damage
    version = ProjectStore(tmp_path / "outputs").create_version("p", "v1")
    host = DiffusersHost(pipe)
    settings = TrainSettings(**BASE, cache_latents=cache, flip=True)
    result = train_version(host, settings, version, dataset_dir=root)

    assert result.status == "done", result.message
    assert result.steps == 3  # batches were built from the 3 good images only
    logged = [e.message for e in host.events if e.kind == "log" and broken.name in e.message]
    assert logged and "damaged" in logged[0] and "re-export it or remove it" in logged[0]
    assert broken.name in (version.logs / "run.log").read_text(encoding="utf-8")
    with safe_open(str(result.checkpoints[-1]), "pt") as handle:
        meta = handle.metadata()
    # the metadata describes what was trained on: the skipped image's caption and count are not in it
    assert json.loads(meta["ss_tag_frequency"]) == {
        "2_demo": {"demo": 3, "white background": 3, "red square": 1, "green square": 1, "blue square": 1}
    }
    assert json.loads(meta["ss_dataset_dirs"]) == {"2_demo": {"n_repeats": 2, "img_count": 3}}
    assert meta["ss_num_train_images"] == "6"


def test_batches_after_a_skip_name_only_good_images_and_are_reproducible(pipe, dataset):
    root, broken = dataset
    settings = TrainSettings(**BASE)

    def batches_by_path():
        scan = scan_dataset(root)
        feed = BatchFeed(DiffusersHost(pipe), scan, settings, LatentCache("memory"))
        skipped = []
        feed.precache(on_skip=skipped.append)
        assert [p.path for p in skipped] == [str(broken)] and scan.skipped[-1].path == str(broken)
        return [[str(feed.items[i].image_path) for i in batch] for e in range(3) for batch in feed.epoch_batches(e)]

    first = batches_by_path()
    assert first and all(str(broken) not in batch for batch in first)
    assert sum(len(b) for b in first) == 3 * 6
    assert batches_by_path() == first  # a resumed run rebuilds the same batches


def test_every_image_bad_fails_with_a_message_naming_the_folder(pipe, tmp_path):
    folder = tmp_path / "data" / "2_broken"
    folder.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        write_truncated_jpeg(folder / name, size=128)
    host = DiffusersHost(pipe)
    version = ProjectStore(tmp_path / "outputs").create_version("p", "bad")
    result = train_version(host, TrainSettings(**BASE), version, dataset_dir=tmp_path / "data")
    assert result.status == "error"
    assert str(tmp_path / "data") in result.message and "could be decoded" in result.message
    assert sum(1 for e in host.events if e.kind == "log" and "damaged" in e.message) == 2
