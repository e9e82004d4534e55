"""Each loss and noise option of #14 changes one micro-batch's loss the way it should, seen through a recording
host whose prediction is a fixed function of its input (so every difference comes from the option itself)."""

import pytest
import torch

from lib_lora_train.host import AdapterTarget, Conditioning, ImageGeometry, ModelParts
from lib_lora_train.settings import TrainSettings
from lib_lora_train.train import noise as N
from lib_lora_train.train.batches import Batch
from lib_lora_train.train.loop import LoopContext, micro_batch_loss
from lib_lora_train.train.precision import Precision

GEO = ImageGeometry((64, 64), (0, 0), (64, 64))


class RecordingHost:
    """predict(x) = 0.5 * x; keeps what it was given."""

    def __init__(self):
        self.calls = []

    def encode_text(self, captions, geometry):
        return Conditioning(context=torch.zeros((len(captions), 2, 4)))

    def predict(self, noisy, timesteps, cond):
        self.calls.append((noisy.clone(), timesteps.clone()))
        return 0.5 * noisy


class Feed:
    def __init__(self, n=4, reg=(), masks=None):
        self.latents = torch.randn((n, 4, 8, 8), generator=torch.Generator().manual_seed(3))
        self.reg, self.masks = set(reg), masks

    def load(self, indices, step, micro, positions):
        weights = None
        if self.reg:
            weights = torch.tensor([self.settings.prior_loss_weight if i in self.reg else 1.0 for i in indices])
        masks = self.masks[indices] if self.masks is not None else None
        return Batch(self.latents[indices], ["a"] * len(indices), [GEO] * len(indices), weights, masks)


def _schedule(n=1000):
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def _loss(feed=None, prediction="eps", **settings):
    s = TrainSettings(te_lr=0, shuffle_tags=False, **settings)
    host, feed = RecordingHost(), feed or Feed()
    feed.settings = s
    unet = AdapterTarget("lora_unet", torch.nn.Identity(), "diffusers")
    parts = ModelParts("sd1", prediction, unet, [], _schedule(), torch.device("cpu"), torch.float32)
    ctx = LoopContext(host, parts, s, feed, None, None, None, Precision(None, False), [], False, 1, 1)
    loss = micro_batch_loss(ctx, 0, 0, [0, 1, 2, 3])
    return loss.item(), host.calls[0], ctx


def test_timesteps_stay_in_the_range():
    _, (_, t), _ = _loss(min_timestep=200, max_timestep=300)
    assert t.min() >= 200 and t.max() < 300
    _, (_, t_all), _ = _loss()
    assert not torch.equal(t, t_all)


def test_input_perturbation_noises_the_input_but_not_the_target():
    plain, (x_plain, t_plain), _ = _loss()
    ip, (x_ip, t_ip), _ = _loss(ip_noise_gamma=0.1)
    assert torch.equal(t_plain, t_ip)
    assert not torch.allclose(x_plain, x_ip)
    assert plain != ip


def test_multires_noise_changes_the_noise():
    _, (x_plain, _), _ = _loss()
    _, (x_multi, _), _ = _loss(multires_noise_iterations=6, multires_noise_discount=0.3)
    assert not torch.allclose(x_plain, x_multi)


def test_huber_pulls_less_than_l2_and_l1_differs():
    l2, _, _ = _loss()
    huber, _, _ = _loss(loss_type="huber", huber_schedule="constant", huber_c=0.1)
    l1, _, _ = _loss(loss_type="l1")
    assert huber < l2 and l1 != l2
    smooth, _, _ = _loss(loss_type="smooth_l1", huber_schedule="constant", huber_c=0.1)
    assert smooth == pytest.approx(huber / 0.1, rel=1e-5)


def test_debiased_estimation_weights_each_sample_by_one_over_sqrt_snr():
    feed = Feed()
    plain, (noisy, t), ctx = _loss(feed)
    debiased, _, _ = _loss(feed, debiased_estimation_loss=True)
    # rebuild each sample's L2 loss from what the host saw: noise = (x_t - sqrt(a) x_0) / sqrt(1 - a)
    a = ctx.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    noise = (noisy - a.sqrt() * feed.latents) / (1 - a).sqrt()
    per_sample = ((0.5 * noisy - noise) ** 2).mean(dim=(1, 2, 3))
    assert plain == pytest.approx(per_sample.mean().item(), rel=1e-4)
    weights = torch.clamp(N.snr(t, ctx.alphas_cumprod), max=1000).rsqrt()
    assert debiased == pytest.approx((per_sample * weights).mean().item(), rel=1e-4)


def test_a_black_mask_trains_nothing_and_half_a_mask_less():
    zeros = torch.zeros((4, 1, 8, 8))
    none, _, _ = _loss(Feed(masks=zeros), masked_loss=True)
    assert none == 0
    half = zeros.clone()
    half[..., :4] = 1
    plain, _, _ = _loss()
    halved, _, _ = _loss(Feed(masks=half), masked_loss=True)
    assert 0 < halved < plain


def test_regularisation_images_are_weighted_by_the_prior_loss_weight():
    plain, _, _ = _loss(Feed(reg=(2, 3)), prior_loss_weight=1.0)
    none, _, _ = _loss(Feed(reg=(2, 3)), prior_loss_weight=0.0)
    double, _, _ = _loss(Feed(reg=(2, 3)), prior_loss_weight=2.0)
    # loss = (train + w * reg) / 4: linear in w
    assert double - plain == pytest.approx(plain - none, rel=1e-5)
    assert none < plain < double


def test_v_parameterization_and_zero_terminal_snr_change_the_target_and_schedule():
    eps, _, ctx_eps = _loss()
    v, _, ctx_v = _loss(v_parameterization=True)
    assert ctx_v.prediction == "v" and ctx_eps.prediction == "eps" and v != eps
    _, _, ctx_z = _loss(zero_terminal_snr=True)
    assert ctx_z.alphas_cumprod[-1] < 1e-7 < ctx_eps.alphas_cumprod[-1]
    assert torch.equal(ctx_eps.alphas_cumprod, _schedule())


def test_the_options_leave_the_default_loss_alone():
    a, _, _ = _loss()
    b, _, _ = _loss(prior_loss_weight=3.0, huber_c=0.5, multires_noise_discount=0.9)  # inert without their switches
    assert a == b


@pytest.mark.parametrize("name", ["multires_noise_iterations", "ip_noise_gamma"])
def test_a_sample_draws_the_same_numbers_alone_or_in_a_batch(name):
    value = {"multires_noise_iterations": 4, "ip_noise_gamma": 0.1}[name]
    s = TrainSettings(te_lr=0, shuffle_tags=False, **{name: value})
    feed = Feed()
    feed.settings = s
    unet = AdapterTarget("lora_unet", torch.nn.Identity(), "diffusers")
    parts = ModelParts("sd1", "eps", unet, [], _schedule(), torch.device("cpu"), torch.float32)
    host = RecordingHost()
    ctx = LoopContext(host, parts, s, feed, None, None, None, Precision(None, False), [], False, 1, 1)
    micro_batch_loss(ctx, 0, 0, [0, 1, 2, 3])
    micro_batch_loss(ctx, 0, 0, [2, 3], positions=[2, 3])
    whole, half = host.calls[0][0], host.calls[1][0]
    assert torch.allclose(whole[2:], half, atol=1e-6)

