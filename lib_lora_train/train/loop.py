"""The step loop: micro-batches -> loss -> backward -> optimiser step, with stop checks between steps.

The loop knows nothing about files; the runner passes ``on_epoch_end`` (checkpoints, samples) and ``on_stop``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lib_lora_train.host import Conditioning, ModelParts, TrainingHost
from lib_lora_train.train import loss_terms as L
from lib_lora_train.train import noise as N
from lib_lora_train.train.batches import BatchFeed
from lib_lora_train.train.distributed import SOLO, Group
from lib_lora_train.train.events import ProgressEvent, ProgressMeter
from lib_lora_train.train.memory import device_memory
from lib_lora_train.train.precision import Precision, autocast


@dataclass
class LoopContext:
    host: TrainingHost
    parts: ModelParts
    settings: object
    feed: BatchFeed
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: object
    precision: Precision
    params: list[torch.nn.Parameter]
    train_te: bool
    total_steps: int
    total_epochs: int
    # how often the loss is read back from the device: .item() forces a sync that stalls a GPU pipeline
    loss_read_every: int = 1
    text_cache: dict = field(default_factory=dict)
    # the processes of a data-parallel run (each trains its shard of every batch); one process by default
    group: Group = SOLO
    # the schedule and prediction type trained with: the model's, unless zero_terminal_snr / v_parameterization say
    alphas_cumprod: torch.Tensor | None = None
    prediction: str = ""

    def __post_init__(self) -> None:
        s = self.settings
        if self.alphas_cumprod is None:
            alphas = self.parts.alphas_cumprod
            self.alphas_cumprod = N.zero_terminal_snr(alphas) if getattr(s, "zero_terminal_snr", False) else alphas
        if not self.prediction:
            self.prediction = "v" if getattr(s, "v_parameterization", False) else self.parts.prediction


@dataclass
class LoopOutcome:
    status: str  # "done" or "stopped"
    steps: int
    last_loss: float | None


def captions_vary(settings) -> bool:
    """Whether an image's caption changes from step to step (shuffled or dropped tags): then a cache of text-encoder
    outputs would miss on nearly every lookup and only grow (kohya refuses to cache in that case too)."""
    return bool(settings.shuffle_tags or settings.caption_dropout > 0 or settings.tag_dropout > 0)


def _encode_text(ctx: LoopContext, batch) -> Conditioning:
    if ctx.train_te:
        return ctx.host.encode_text(batch.captions, batch.geometry)
    if captions_vary(ctx.settings):
        with torch.no_grad():
            return ctx.host.encode_text(batch.captions, batch.geometry)
    # frozen text encoders: each caption's conditioning is computed once (per geometry, which SDXL conditions on)
    rows = []
    for caption, geo in zip(batch.captions, batch.geometry, strict=False):
        key = (caption, geo)
        if key not in ctx.text_cache:
            with torch.no_grad():
                ctx.text_cache[key] = ctx.host.encode_text([caption], [geo])
            if len(ctx.text_cache) > 4096:
                ctx.text_cache.pop(next(iter(ctx.text_cache)))
        rows.append(ctx.text_cache[key])
    vector = torch.cat([r.vector for r in rows]) if rows[0].vector is not None else None
    return Conditioning(context=torch.cat([r.context for r in rows]), vector=vector)


def micro_batch_loss(
    ctx: LoopContext, step: int, micro: int, indices: list[int], positions: list[int] | None = None
) -> torch.Tensor:
    """The loss of one micro-batch, averaged over its samples; each sample's noise and timestep drawn from
    (seed, step, micro, its position in the global micro-batch; by default 0, 1, ...).

    Per sample, in kohya's order: the element-wise loss (L2, L1, Huber, smooth L1), the mask, the mean, then the
    weights (regularisation images' prior_loss_weight, min-SNR-gamma, debiased estimation).
    """
    s, parts = ctx.settings, ctx.parts
    alphas, prediction = ctx.alphas_cumprod, ctx.prediction
    positions = list(range(len(indices))) if positions is None else positions
    batch = ctx.feed.load(indices, step, micro, positions)
    gen = N.sample_generators(s.seed, step, micro, positions)
    latents = batch.latents
    noise = N.make_noise(tuple(latents.shape), gen, s.noise_offset)
    noise = N.pyramid_noise(noise, gen, s.multires_noise_iterations, s.multires_noise_discount)
    low, high = N.timestep_range(parts.num_train_timesteps, s.min_timestep, s.max_timestep)
    timesteps = N.sample_timesteps(latents.shape[0], parts.num_train_timesteps, gen, low, high)
    noisy = N.add_noise(latents, N.perturbed(noise, gen, s.ip_noise_gamma), timesteps, alphas)
    target = N.training_target(prediction, latents, noise, timesteps, alphas)
    device = parts.device
    in_dtype = parts.weight_dtype if ctx.precision.autocast_dtype is None else torch.float32
    with autocast(ctx.precision, device):
        cond = _encode_text(ctx, batch)
        pred = ctx.host.predict(noisy.to(device, in_dtype), timesteps.to(device), cond)
    huber = L.huber_c(s.huber_schedule, s.huber_c, timesteps, alphas) if s.loss_type in L.HUBER_TYPES else None
    loss = L.elementwise_loss(pred, target.to(device), s.loss_type, huber)
    if batch.masks is not None:
        loss = L.masked(loss, batch.masks)
    per_sample = loss.mean(dim=(1, 2, 3))
    if batch.loss_weights is not None:
        per_sample = per_sample * batch.loss_weights.to(device)
    if s.min_snr_gamma > 0:
        per_sample = per_sample * N.min_snr_weights(timesteps, alphas, s.min_snr_gamma, prediction).to(device)
    if s.debiased_estimation_loss:
        per_sample = per_sample * L.debiased_weights(timesteps, alphas, prediction).to(device)
    return per_sample.mean()


def optimizer_step(ctx: LoopContext, step: int) -> torch.Tensor:
    """One optimiser step over the step's micro-batches; returns the mean loss as a detached device tensor.

    In a data-parallel run each process takes its shard of every micro-batch, weighted by shard/global size, and the
    gradients are summed over the processes: the same mean over the global batch as one process computes.
    """
    micro_batches = ctx.feed.micro_batches(step)
    total = torch.zeros((), device=ctx.parts.device)
    for micro, batch in enumerate(micro_batches):
        positions, indices = ctx.group.shard(batch)
        if not indices:
            continue
        share = len(indices) / len(batch) / len(micro_batches)
        loss = micro_batch_loss(ctx, step, micro, indices, positions) * share
        ctx.scaler.scale(loss).backward()
        total += loss.detach()
    total = ctx.group.sum_gradients(ctx.params, total)
    if ctx.settings.max_grad_norm > 0:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(ctx.params, ctx.settings.max_grad_norm)
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    return total


def run_loop(
    ctx: LoopContext,
    start_step: int,
    *,
    on_epoch_end: Callable[[int, int], None],
    on_losses: Callable[[list[tuple[int, int, float, float, float]]], None] = lambda rows: None,
) -> LoopOutcome:
    """Train from ``start_step`` to ``ctx.total_steps``; ``on_epoch_end(epoch, step)`` after each (1-based) epoch.

    ``on_losses`` receives rows ``(step, epoch, loss, loss_avg, lr)`` whenever losses are read back.
    """
    meter = ProgressMeter(ctx.total_steps, start_step)
    pending: list[tuple[int, torch.Tensor, float]] = []
    last_loss = None
    steps_per_epoch = ctx.feed.steps_per_epoch
    step = start_step
    while step < ctx.total_steps:
        if ctx.group.any(ctx.host.should_stop()):
            _flush(pending, meter, on_losses, steps_per_epoch)
            return LoopOutcome("stopped", step, last_loss)
        lr = ctx.scheduler.get_last_lr()[0]
        # per-step seeds also for anything inside the model that draws from the global generator (dropout); each
        # process of a data-parallel run draws its own masks (one seed for all would give every shard rank 0's masks)
        labels = ("torch", ctx.group.rank) if ctx.group.active else ("torch",)
        torch.manual_seed(N.derived_seed(ctx.settings.seed, step, *labels))
        loss = optimizer_step(ctx, step)
        step += 1
        meter.tick(step)
        pending.append((step, loss, lr))
        if len(pending) >= ctx.loss_read_every or step == ctx.total_steps:
            newest = _flush(pending, meter, on_losses, steps_per_epoch)
            last_loss = newest if newest is not None else last_loss
        epoch = (step - 1) // steps_per_epoch + 1
        ctx.host.report(
            ProgressEvent(
                "step",
                step,
                ctx.total_steps,
                epoch,
                ctx.total_epochs,
                last_loss,
                meter.loss_avg,
                lr,
                meter.it_per_s,
                meter.eta_s(step),
                memory=_memory_text(ctx.parts.device),
            )
        )
        if step % steps_per_epoch == 0 or step == ctx.total_steps:
            _flush(pending, meter, on_losses, steps_per_epoch)
            on_epoch_end(epoch, step)
    return LoopOutcome("done", step, last_loss)


def _memory_text(device) -> str:
    use = device_memory(device)
    return use.text() if use is not None else ""


def _flush(pending, meter: ProgressMeter, on_losses, steps_per_epoch: int) -> float | None:
    """Read the pending losses back in one transfer; returns the newest."""
    if not pending:
        return None
    values = torch.stack([loss for _, loss, _ in pending]).float().cpu().tolist()
    rows = []
    for (step, _, lr), value in zip(pending, values, strict=True):
        meter.add_loss(value)
        rows.append((step, (step - 1) // steps_per_epoch + 1, value, meter.loss_avg, lr))
    on_losses(rows)
    pending.clear()
    return values[-1]
