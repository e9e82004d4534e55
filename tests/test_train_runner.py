"""train_version end to end on a tiny random SD1 pipeline (CPU): learning, resume, stop, host restoration."""

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lib_lora_train.hosts.diffusers_host import DiffusersHost
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline, write_tiny_dataset
from lib_lora_train.settings import TrainSettings
from lib_lora_train.store.projects import ProjectStore
from lib_lora_train.train.runner import train_version

BASE = dict(resolution=64, batch_size=2, epochs=2, unet_lr=1e-3, te_lr=1e-4, mixed_precision="no", seed=3)


class ScriptedHost(DiffusersHost):
    """A diffusers host that presses stop after ``stop_after`` steps or fails inside the UNet call ``fail_at``."""

    def __init__(self, pipe, stop_after=None, fail_at=None):
        super().__init__(pipe)
        self.stop_after, self.fail_at, self.calls = stop_after, fail_at, 0

    def should_stop(self):
        steps = sum(1 for e in self.events if e.kind == "step")
        return self.stop_after is not None and steps >= self.stop_after

    def predict(self, noisy_latents, timesteps, cond):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("boom: the UNet failed")
        return super().predict(noisy_latents, timesteps, cond)


@pytest.fixture(scope="module")
def pipe():
    return build_tiny_pipeline(seed=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # 2 images x 2 repeats = 4 per epoch = 2 steps of batch 2
    return write_tiny_dataset(tmp_path_factory.mktemp("data"), count=2, size=64)


@pytest.fixture
def store(tmp_path):
    return ProjectStore(tmp_path / "outputs")


def _tree_state(pipe):
    state = {}
    for name, module in (("unet", pipe.unet), ("te", pipe.text_encoder)):
        state[name] = (
            [(p, id(m)) for p, m in module.named_modules()],
            {k: (v.clone(), v.data_ptr()) for k, v in module.state_dict().items()},
            {k: p.requires_grad for k, p in module.named_parameters()},
            {p: m.training for p, m in module.named_modules()},
            getattr(module, "is_gradient_checkpointing", False),
        )
    return state


def _assert_same_tree(pipe, before):
    after = _tree_state(pipe)
    for name in before:
        mods0, sd0, rg0, tr0, gc0 = before[name]
        mods1, sd1, rg1, tr1, gc1 = after[name]
        assert mods1 == mods0, f"{name}: module objects changed"
        assert set(sd1) == set(sd0)
        for key, (value, ptr) in sd0.items():
            assert torch.equal(sd1[key][0], value) and sd1[key][1] == ptr, f"{name}.{key} changed"
        assert rg1 == rg0 and tr1 == tr0 and gc1 == gc0


def _no_partial_files(folder: Path):
    leftovers = [p for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == []
    for path in folder.rglob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:  # raises on a truncated file
            assert list(handle.keys())


@pytest.mark.slow
def test_a_run_writes_epoch_checkpoints_logs_and_the_final_file(pipe, dataset, store):
    version = store.create_version("p", "v1")
    host = DiffusersHost(pipe)
    settings = TrainSettings(**BASE, network="locon", save_every=1, min_snr_gamma=5, noise_offset=0.05)
    result = train_version(host, settings, version, dataset_dir=dataset)
    assert result.status == "done", result.message
    assert [p.name for p in result.checkpoints] == ["p-v1-000001.safetensors", "p-v1.safetensors"]
    assert result.steps == 4 and result.final_loss is not None
    tensors = load_file(str(result.checkpoints[-1]))
    assert any(k.startswith("lora_te_text_model_encoder_layers_0") for k in tensors)
    assert any("resnets" in k and k.endswith("lora_down.weight") for k in tensors)  # LoCon convs
    with safe_open(str(result.checkpoints[0]), "pt") as handle:
        assert handle.metadata()["ss_epoch"] == "1" and handle.metadata()["ss_steps"] == "2"
    kinds = [e.kind for e in host.events]
    assert kinds.count("step") == 4 and kinds.count("checkpoint") == 2 and kinds[-1] == "done"
    last_step = [e for e in host.events if e.kind == "step"][-1]
    assert last_step.step == 4 and last_step.total_steps == 4 and last_step.lr is not None
    assert last_step.loss_avg is not None and last_step.it_per_s and last_step.eta_s == pytest.approx(0.0)
    lines = (version.logs / "loss.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,loss") and len(lines) == 5
    assert (version.logs / "run.log").exists()


@pytest.mark.slow
def test_loss_falls_on_an_easy_target(pipe, dataset, store):
    """Training repeatedly on the same few noise draws must fit them: the loss on those draws goes down."""
    from lib_lora_train.dataset.scan import scan_dataset
    from lib_lora_train.train.adapters import inject_adapters
    from lib_lora_train.train.batches import BatchFeed
    from lib_lora_train.train.latents import LatentCache
    from lib_lora_train.train.loop import LoopContext, micro_batch_loss, optimizer_step
    from lib_lora_train.train.optimizers import build_optimizer
    from lib_lora_train.train.precision import make_scaler, resolve_precision
    from lib_lora_train.train.schedulers import build_scheduler

    host = DiffusersHost(pipe)
    parts = host.model_parts()
    settings = TrainSettings(**{**BASE, "unet_lr": 1e-2, "te_lr": 0.0}, lr_scheduler="constant", shuffle_tags=False)
    feed = BatchFeed(host, scan_dataset(dataset), settings, LatentCache("memory"))
    handle = inject_adapters(parts, settings, train_te=False)
    try:
        params = handle.parameters("unet")
        optimizer = build_optimizer("adamw", [{"params": params, "lr": 1e-2}], weight_decay=0.0)
        precision = resolve_precision("no", parts.device, parts.weight_dtype)
        ctx = LoopContext(
            host,
            parts,
            settings,
            feed,
            optimizer,
            build_scheduler(optimizer, settings, 100),
            make_scaler(precision, parts.device),
            precision,
            params,
            False,
            100,
            1,
        )

        def held_out_loss():
            with torch.no_grad():
                return sum(micro_batch_loss(ctx, s, 0, feed.micro_batches(s)[0]).item() for s in range(2))

        before = held_out_loss()
        for i in range(10):
            optimizer_step(ctx, i % 2)  # the same two steps' batches, noise and timesteps again and again
        after = held_out_loss()
    finally:
        handle.remove()
    assert after < 0.8 * before


@pytest.mark.slow
@pytest.mark.parametrize("network", ["lora", "loha"])
def test_interrupted_and_resumed_run_ends_with_identical_weights(pipe, dataset, store, network):
    settings = TrainSettings(
        **BASE, save_every=1, save_state=True, save_precision="fp32", flip=True, caption_dropout=0.2,
        network=network, rank=4, alpha=2.0,
    )  # fmt: skip
    straight = store.create_version("p", "straight")
    assert train_version(DiffusersHost(pipe), settings, straight, dataset_dir=dataset).status == "done"

    resumed = store.create_version("p", "resumed")
    first = train_version(ScriptedHost(pipe, stop_after=1), settings, resumed, dataset_dir=dataset)
    assert first.status == "stopped" and first.steps == 1  # in the middle of epoch 1
    second = train_version(DiffusersHost(pipe), settings, resumed, dataset_dir=dataset, resume=True)
    assert second.status == "done" and second.steps == 4

    for name in ("000001", None):
        a = load_file(str(straight.checkpoint_file(1 if name else None)))
        b = load_file(str(resumed.checkpoint_file(1 if name else None)))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    with safe_open(str(resumed.checkpoint_file(None)), "pt") as handle:
        assert handle.metadata()["ss_network_alpha"] == "2.0"  # the user's alpha, whatever the file stores
        modules = {k.rsplit(".", 1)[0] for k in handle.keys() if k.endswith(".alpha")}  # noqa: SIM118
        for module in modules:
            alpha = float(handle.get_tensor(f"{module}.alpha"))
            if network == "loha":  # alpha = rank (the scale is in the factors): LyCORIS's merge gives the same delta
                assert alpha == handle.get_tensor(f"{module}.hada_w1_b").shape[0], module
            else:
                assert alpha in (2.0, settings.conv_alpha), module


def test_stop_leaves_only_complete_files(pipe, dataset, store):
    version = store.create_version("p", "stop")
    settings = TrainSettings(**BASE, save_every=1, save_state=True)
    host = ScriptedHost(pipe, stop_after=3)  # one epoch (2 steps) and one more step
    result = train_version(host, settings, version, dataset_dir=dataset)
    assert result.status == "stopped" and result.steps == 3
    # epoch 1, and the step reached since then, named so that nobody takes it for an epoch
    assert sorted(p.name for p in version.checkpoints.iterdir()) == [
        "p-stop-000001.safetensors",
        "p-stop-step000003-partial.safetensors",
    ]
    assert [p.name for _, p in version.list_checkpoints()] == ["p-stop-000001.safetensors"]
    with safe_open(str(version.partial_file(3)), "pt") as handle:
        assert handle.metadata()["ss_steps"] == "3"
    assert host.events[-1].kind == "stopped"
    _no_partial_files(version.path)
    assert (version.path / "state" / "state.json").exists()


@pytest.mark.parametrize("outcome", ["done", "stopped", "error"])
def test_host_tree_is_exactly_restored(pipe, dataset, store, outcome):
    pipe.unet.text_embedding_probe = None  # harmless attribute: must survive untouched
    pipe.text_encoder.requires_grad_(False)  # a host with its own mix of flags
    pipe.unet.up_blocks[0].eval()
    before = _tree_state(pipe)
    host = {
        "done": DiffusersHost(pipe),
        "stopped": ScriptedHost(pipe, stop_after=1),
        "error": ScriptedHost(pipe, fail_at=2),
    }[outcome]
    settings = TrainSettings(**BASE, max_steps=2, network="locon", gradient_checkpointing=True, save_every=0)
    result = train_version(host, settings, store.create_version("p", outcome), dataset_dir=dataset)
    assert result.status == outcome
    if outcome == "error":
        assert "boom" in result.message and host.events[-1].kind == "error"
    _assert_same_tree(pipe, before)
    pipe.text_encoder.requires_grad_(True)
    pipe.unet.train(False)
    del pipe.unet.text_embedding_probe


def test_bad_optimizer_package_is_an_error_result_and_the_host_is_restored(pipe, dataset, store, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lion_pytorch", None)
    before = _tree_state(pipe)
    settings = TrainSettings(**BASE, optimizer="lion")
    result = train_version(DiffusersHost(pipe), settings, store.create_version("p", "lion"), dataset_dir=dataset)
    assert result.status == "error" and "lion-pytorch" in result.message
    _assert_same_tree(pipe, before)


def test_samples_are_rendered_per_epoch(pipe, dataset, store):
    version = store.create_version("p", "samples")
    settings = TrainSettings(
        **{**BASE, "epochs": 1, "te_lr": 0.0},
        sample_every=1,
        sample_prompts=["red square --n blurry"],
        sample_steps=1,
        max_steps=1,
    )
    host = DiffusersHost(pipe)
    result = train_version(host, settings, version, dataset_dir=dataset)
    assert result.status == "done"
    assert [p.name for p in version.samples.iterdir()] == ["000001-0.png"]
    assert any(e.kind == "sample" for e in host.events)
    from PIL import Image

    with Image.open(version.samples / "000001-0.png") as image:
        parameters = image.text["parameters"]  # as the WebUI writes it: PNG Info and "send to" read it back
    assert parameters.startswith("red square\nNegative prompt: blurry\nSteps: 1, Sampler: Euler, CFG scale: ")
    assert "Train Tools sample: p-samples epoch 1" in parameters


def test_a_stop_without_epoch_saves_keeps_the_adapters_and_a_finished_run_keeps_its_state(pipe, dataset, store):
    version = store.create_version("p", "nosave")
    settings = TrainSettings(**{**BASE, "mixed_precision": "fp16"}, save_every=0, lr_warmup=0.5)
    result = train_version(ScriptedHost(pipe, stop_after=1), settings, version, dataset_dir=dataset)
    assert result.status == "stopped" and [p.name for p in result.checkpoints] == [
        "p-nosave-step000001-partial.safetensors"
    ]
    with safe_open(str(result.checkpoints[0]), "pt") as handle:
        meta = handle.metadata()
    assert meta["ss_mixed_precision"] == "no"  # what ran: the CPU trains in fp32 whatever was asked
    assert meta["ss_lr_warmup_steps"] == "2"  # half of the 4 steps, an integer as kohya writes it
    log = (version.logs / "run.log").read_text(encoding="utf-8")
    assert "caching latents of 2 images" in log and "lora_unet: adapters on" in log  # the console's lines too

    finished = store.create_version("p", "kept")
    settings = TrainSettings(**BASE, save_every=1, save_state=True)
    assert train_version(DiffusersHost(pipe), settings, finished, dataset_dir=dataset).status == "done"
    state = (finished.path / "state" / "state.json").read_text(encoding="utf-8")
    assert '"step": 4' in state  # the final state: the run can be extended with more epochs
