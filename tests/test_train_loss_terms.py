"""The loss and noise options of #14 as pure functions: each changes what it should and nothing else."""

import math

import torch

from lib_lora_train.train import loss_terms as L
from lib_lora_train.train import noise as N


def _schedule(n=1000):
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def test_timestep_range_clips_to_the_schedule():
    assert N.timestep_range(1000) == (0, 1000)
    assert N.timestep_range(1000, 200, 700) == (200, 700)
    assert N.timestep_range(500, 0, 1000) == (0, 500)


def test_pyramid_noise_adds_low_frequencies_and_keeps_unit_std_per_sample():
    base = torch.randn((2, 4, 32, 32), generator=torch.Generator().manual_seed(0))
    out = N.pyramid_noise(base, torch.Generator().manual_seed(1), 6, 0.8)
    assert not torch.allclose(out, base)
    assert torch.allclose(out.flatten(1).std(dim=1), torch.ones(2), atol=1e-5)
    # neighbouring pixels correlate: the low-resolution levels are smooth
    def neighbour_corr(x):
        a, b = x[..., :, :-1].flatten(), x[..., :, 1:].flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert neighbour_corr(out) > neighbour_corr(base) + 0.1
    assert torch.equal(N.pyramid_noise(base, torch.Generator().manual_seed(1), 0, 0.3), base)


def test_pyramid_noise_of_a_sample_does_not_depend_on_its_batch():
    base = torch.randn((3, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    whole = N.pyramid_noise(base[:1], torch.Generator().manual_seed(5), 4, 0.3)
    again = N.pyramid_noise(base[:1].clone(), torch.Generator().manual_seed(5), 4, 0.3)
    assert torch.equal(whole, again)


def test_input_perturbation_changes_only_the_noised_input():
    noise = torch.zeros((1, 4, 8, 8))
    out = N.perturbed(noise, torch.Generator().manual_seed(0), 0.1)
    assert 0.07 < out.std().item() < 0.13
    assert torch.equal(N.perturbed(noise, torch.Generator().manual_seed(0), 0.0), noise)


def test_zero_terminal_snr_keeps_the_first_and_zeroes_the_last_step():
    a = _schedule()
    z = N.zero_terminal_snr(a)
    assert math.isclose(z[0].item(), a[0].item(), rel_tol=1e-6)
    assert z[-1].item() < 1e-7 < a[-1].item()
    assert torch.all(z[1:] <= z[:-1])
    assert torch.all(z <= a + 1e-7)


def test_huber_schedules():
    a = _schedule()
    t = torch.tensor([0, 500, 999])
    assert torch.allclose(L.huber_c("constant", 0.1, t, a), torch.full((3,), 0.1))
    exp = L.huber_c("exponential", 0.1, t, a)
    assert math.isclose(exp[0].item(), 1.0, rel_tol=1e-6) and exp[2].item() < 0.11 and exp[1] > exp[2]
    snr_c = L.huber_c("snr", 0.1, t, a)
    assert snr_c[0].item() > 0.9 and 0.1 < snr_c[2].item() < 0.12 and snr_c[0] > snr_c[1] > snr_c[2]


def test_huber_is_quadratic_near_zero_and_linear_far_out():
    pred, target = torch.tensor([[0.001, 10.0]]).reshape(2, 1, 1, 1), torch.zeros(2, 1, 1, 1)
    c = torch.tensor([0.1, 0.1])
    huber = L.elementwise_loss(pred, target, "huber", c).flatten()
    l2 = L.elementwise_loss(pred, target, "l2").flatten()
    assert math.isclose(huber[0].item(), l2[0].item(), rel_tol=1e-2)  # 2c(sqrt(d²+c²)-c) ≈ d² for d << c
    assert math.isclose(huber[1].item(), 2 * 0.1 * (math.sqrt(100.01) - 0.1), rel_tol=1e-6)
    assert huber[1] < l2[1] / 40
    smooth = L.elementwise_loss(pred, target, "smooth_l1", c).flatten()
    assert torch.allclose(smooth, huber / 0.1)
    assert torch.allclose(L.elementwise_loss(pred, target, "l1").flatten(), torch.tensor([0.001, 10.0]))


def test_debiased_weights_fall_with_the_snr():
    a = _schedule()
    t = torch.tensor([10, 500, 990])
    eps = L.debiased_weights(t, a, "eps")
    assert torch.all(eps[:-1] < eps[1:])
    s = N.snr(t, a)
    assert torch.allclose(eps, 1 / torch.clamp(s, max=1000).sqrt())
    assert torch.allclose(L.debiased_weights(t, a, "v"), 1 / (torch.clamp(s, max=1000) + 1))


def test_mask_is_area_resized_and_weights_the_loss():
    loss = torch.ones((1, 4, 4, 4))
    mask = torch.zeros((1, 1, 32, 32))
    mask[..., :16, :] = 1.0
    out = L.masked(loss, mask)
    assert torch.equal(out[0, :, :2], torch.ones(4, 2, 4)) and torch.equal(out[0, :, 2:], torch.zeros(4, 2, 4))
