"""Latent cache keys and storage; the resumable state folder."""

import os

import pytest
import torch

from lib_lora_train.host import ImageGeometry
from lib_lora_train.train.latents import LatentCache, LatentKey
from lib_lora_train.train.state import load_training_state, read_resume_point, save_training_state

GEO = ImageGeometry((64, 48), (0, 8), (64, 32))


def _encoder(calls):
    def encode(key):
        calls.append(key)
        return torch.full((4, 8, 4), float(len(calls))), GEO

    return encode


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cache_encodes_once_per_image_bucket_flip_and_mtime(tmp_path, mode):
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    cache = LatentCache(mode, tmp_path / "cache" if mode == "disk" else None)
    calls = []
    first, geo = cache.get(LatentKey.of(image, (32, 64), False), _encoder(calls))
    again, _ = cache.get(LatentKey.of(image, (32, 64), False), _encoder(calls))
    assert len(calls) == 1 and torch.equal(first, again) and geo == GEO
    cache.get(LatentKey.of(image, (64, 64), False), _encoder(calls))  # another bucket
    cache.get(LatentKey.of(image, (32, 64), True), _encoder(calls))  # flipped
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the user edited the image
    cache.get(LatentKey.of(image, (32, 64), False), _encoder(calls))
    assert len(calls) == 4


def test_disk_cache_survives_a_new_cache_object_and_ignores_damaged_files(tmp_path):
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    key = LatentKey.of(image, (32, 64), False)
    calls = []
    LatentCache("disk", tmp_path / "c").get(key, _encoder(calls))
    latent, geo = LatentCache("disk", tmp_path / "c").get(key, _encoder(calls))
    assert len(calls) == 1 and geo == GEO and latent.shape == (4, 8, 4)
    next((tmp_path / "c").glob("*.safetensors")).write_bytes(b"broken")
    LatentCache("disk", tmp_path / "c").get(key, _encoder(calls))
    assert len(calls) == 2


def _training_objects(value):
    p = torch.nn.Parameter(torch.full((3,), value))
    opt = torch.optim.AdamW([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return p, opt, sched, scaler


def test_state_round_trip_and_replacement(tmp_path):
    p, opt, sched, scaler = _training_objects(1.0)
    p.sum().backward()
    opt.step()
    sched.step()
    folder = tmp_path / "state"
    save_training_state(folder, params={"w": p}, optimizer=opt, scheduler=sched, scaler=scaler, step=1, epoch=0)
    save_training_state(folder, params={"w": p}, optimizer=opt, scheduler=sched, scaler=scaler, step=2, epoch=1)
    assert read_resume_point(folder).step == 2 and not (tmp_path / "state.old").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["state"]  # no temp folders left
    q, opt2, sched2, scaler2 = _training_objects(0.0)
    point = load_training_state(folder, params={"w": q}, optimizer=opt2, scheduler=sched2, scaler=scaler2)
    assert point.step == 2 and torch.equal(q, p)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert sched2.last_epoch == sched.last_epoch
    with pytest.raises(ValueError, match="does not fit"):
        load_training_state(folder, params={"other": q}, optimizer=opt2, scheduler=sched2, scaler=scaler2)
    with pytest.raises(FileNotFoundError, match="save_state"):
        load_training_state(tmp_path / "none", params={"w": q}, optimizer=opt2, scheduler=sched2, scaler=scaler2)
