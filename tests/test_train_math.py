"""Pure training math: per-step random numbers, noising, targets, min-SNR, schedules, precision, optimisers."""

import math
import sys

import pytest
import torch

from lib_lora_train.settings import TrainSettings
from lib_lora_train.train import noise as N
from lib_lora_train.train.events import ProgressMeter
from lib_lora_train.train.optimizers import OptimizerUnavailable, build_optimizer
from lib_lora_train.train.precision import resolve_precision
from lib_lora_train.train.schedulers import build_scheduler, lr_factor, warmup_steps

ALPHAS = torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)


def test_step_numbers_depend_only_on_seed_step_and_purpose():
    a = N.make_noise((2, 4, 8, 8), N.step_generator(7, 3, "noise0"))
    torch.randn(100)  # the global generator must not matter
    b = N.make_noise((2, 4, 8, 8), N.step_generator(7, 3, "noise0"))
    c = N.make_noise((2, 4, 8, 8), N.step_generator(7, 4, "noise0"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert N.derived_seed(1, 2) != N.derived_seed(2, 1)


def test_per_sample_draws_do_not_depend_on_how_the_batch_is_split():
    """What a sample gets (noise with offset, pyramid and perturbation terms, timestep) depends on its position in
    the global batch only: positions 2-3 drawn alone equal rows 2-3 of the whole batch of 4."""

    def draw(positions):
        gens = N.sample_generators(5, 7, 1, positions)
        noise = N.make_noise((len(positions), 4, 8, 8), gens, noise_offset=0.1)
        noise = N.perturbed(N.pyramid_noise(noise, gens, 3, 0.5), gens, 0.1)
        return noise, N.sample_timesteps(len(positions), 1000, gens)

    whole_noise, whole_t = draw([0, 1, 2, 3])
    part_noise, part_t = draw([2, 3])
    assert torch.equal(part_noise, whole_noise[2:]) and torch.equal(part_t, whole_t[2:])
    assert not torch.equal(whole_noise[0], whole_noise[1])
    other_step = N.make_noise((1, 4, 8, 8), N.sample_generators(5, 8, 1, [2]))
    assert not torch.equal(other_step[0], N.make_noise((1, 4, 8, 8), N.sample_generators(5, 7, 1, [2]))[0])


def test_noise_offset_adds_a_per_channel_constant():
    plain = N.make_noise((1, 4, 16, 16), N.step_generator(0, 0, "n"))
    offset = N.make_noise((1, 4, 16, 16), N.step_generator(0, 0, "n"), noise_offset=0.5)
    diff = offset - plain
    assert diff.abs().max() > 0
    assert torch.allclose(diff, diff[:, :, :1, :1].expand_as(diff))  # constant over each channel


def test_add_noise_and_v_target_match_the_definitions():
    x0, eps, t = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.tensor([0, 999])
    a = ALPHAS[t].reshape(-1, 1, 1, 1)
    assert torch.allclose(N.add_noise(x0, eps, t, ALPHAS), a.sqrt() * x0 + (1 - a).sqrt() * eps)
    assert torch.allclose(N.v_target(x0, eps, t, ALPHAS), a.sqrt() * eps - (1 - a).sqrt() * x0)
    assert N.training_target("eps", x0, eps, t, ALPHAS) is eps


def test_min_snr_weights_clip_high_snr_and_differ_for_v():
    t = torch.tensor([1, 500, 999])
    w_eps = N.min_snr_weights(t, ALPHAS, 5.0, "eps")
    s = N.snr(t, ALPHAS)
    assert w_eps[0] == pytest.approx(5.0 / s[0].item(), rel=1e-5)  # timestep 1 has SNR >> 5
    assert w_eps[2] == pytest.approx(1.0)  # low SNR: unweighted
    assert torch.all(N.min_snr_weights(t, ALPHAS, 5.0, "v") < w_eps + 1e-9)
    assert torch.equal(N.min_snr_weights(t, ALPHAS, 0, "eps"), torch.ones(3))


@pytest.mark.parametrize("name", ["linear", "cosine", "cosine_with_restarts", "polynomial"])
def test_decaying_schedules_warm_up_then_fall_to_zero(name):
    f = [lr_factor(s, name=name, total_steps=100, warmup=10, cycles=1) for s in range(101)]
    assert f[0] == 0 and f[5] == pytest.approx(0.5) and f[10] == pytest.approx(1.0)
    assert all(b <= a + 1e-12 for a, b in zip(f[10:], f[11:], strict=False))
    assert f[100] == pytest.approx(0.0, abs=1e-9)


def test_constant_schedules_and_restarts():
    assert lr_factor(0, name="constant", total_steps=10, warmup=5) == 1.0
    assert lr_factor(2, name="constant_with_warmup", total_steps=10, warmup=4) == 0.5
    assert lr_factor(9, name="constant_with_warmup", total_steps=10, warmup=4) == 1.0
    f = [lr_factor(s, name="cosine_with_restarts", total_steps=100, warmup=0, cycles=2) for s in range(100)]
    assert f[49] < 0.01 and f[50] == pytest.approx(1.0)  # a restart half way


def test_warmup_is_a_ratio_below_one_and_steps_above():
    assert warmup_steps(0.1, 200) == 20 and warmup_steps(15, 200) == 15 and warmup_steps(0, 200) == 0


def test_built_scheduler_follows_the_factor():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, TrainSettings(lr_scheduler="linear", lr_warmup=0), 4)
    lrs = []
    for _ in range(4):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.0, 0.75, 0.5, 0.25])


@pytest.mark.parametrize("name", ["adamw", "adafactor", "sgd"])
def test_builtin_optimizers_move_the_weights(name):
    p = torch.nn.Parameter(torch.ones(4, 4))
    opt = build_optimizer(name, [{"params": [p], "lr": 0.1}], weight_decay=0.0)
    (p**2).sum().backward()
    opt.step()
    assert (p < 1).all()


def test_missing_optional_optimizer_names_its_package(monkeypatch):
    p = torch.nn.Parameter(torch.ones(2))
    for name, module, package in (
        ("lion", "lion_pytorch", "lion-pytorch"),
        ("prodigy", "prodigyopt", "prodigyopt"),
        ("adamw8bit", "bitsandbytes", "bitsandbytes"),
    ):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail as if not installed
        with pytest.raises(OptimizerUnavailable, match=package):
            build_optimizer(name, [{"params": [p], "lr": 1.0}], weight_decay=0.0)


def test_fp16_on_cpu_falls_back_with_a_note():
    p = resolve_precision("fp16", torch.device("cpu"), torch.float32)
    assert p.autocast_dtype is None and not p.use_scaler and "CPU" in p.note
    assert resolve_precision("bf16", torch.device("cpu"), torch.float32).autocast_dtype == torch.bfloat16
    assert resolve_precision("no", torch.device("cpu"), torch.float32).name == "no"


def test_progress_meter_speed_eta_and_average():
    clock = iter([0.0, 1.0, 2.0]).__next__
    meter = ProgressMeter(10, 0, clock=clock)
    meter.tick(1)
    meter.tick(2)
    meter.add_loss(1.0)
    meter.add_loss(3.0)
    assert meter.it_per_s == pytest.approx(1.0) and meter.eta_s(2) == pytest.approx(8.0) and meter.loss_avg == 2.0
    assert not math.isnan(meter.loss_avg)


def test_text_encoder_outputs_are_cached_only_when_captions_do_not_change_between_steps():
    from types import SimpleNamespace

    import torch

    from lib_lora_train.host import Conditioning
    from lib_lora_train.settings import TrainSettings
    from lib_lora_train.train.loop import _encode_text

    calls = []

    def encode_text(captions, geometry):
        calls.append(list(captions))
        return Conditioning(context=torch.zeros(len(captions), 2, 3))

    batch = SimpleNamespace(captions=["a, b", "c"], geometry=[None, None])
    for shuffled, expected_calls, cached in ((True, 2, 0), (False, 2, 2)):
        calls.clear()
        ctx = SimpleNamespace(train_te=False, settings=TrainSettings(shuffle_tags=shuffled), text_cache={},
                              host=SimpleNamespace(encode_text=encode_text))  # fmt: skip
        for _ in range(2):
            assert _encode_text(ctx, batch).context.shape == (2, 2, 3)
        # shuffled: each step's captions differ, a cache would only grow (to GBs on a GPU); fixed: encoded once each
        assert (len(calls), len(ctx.text_cache)) == (expected_calls, cached)
