"""Data-parallel training over several processes (``torchrun`` / ``accelerate launch``), one ``ProcessGroup`` each.

Every process holds the whole model and trains on its shard of each global batch (the sampler's batch is
``batch_size x world`` images; a process takes the positions ``rank, rank + world, ...``). The loss of a micro-batch
is the mean over its global samples, so a process scales its shard's mean by shard/global size and the gradients are
summed over the processes: the result is what one process computes for the whole batch. Random numbers are drawn per
sample (``noise.sample_generators``), so the split changes none of them. Only rank 0 writes files and prints.

A process that dies or stops answering ends every collective of the others with ``PeerLost`` (gloo notices a closed
connection at once; a stuck peer after ``LORA_TRAIN_DIST_TIMEOUT`` seconds, 1800 by default), so a run never hangs.
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field

import torch

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_TIMEOUT_S = 1800.0


class PeerLost(RuntimeError):
    """Another training process died or stopped answering; this one stops too."""


@dataclass(frozen=True)
class Group:
    """This process's place in the run; ``Group()`` is a single process, for which every method is a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    # a gloo group for the small CPU-side collectives (stop flag, barriers): with NCCL they would sync the GPU's queue
    # every step, and gloo sees a dead peer's closed connection at once where NCCL waits for its timeout
    control: object = field(default=None, compare=False, repr=False)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: list[int]) -> tuple[list[int], list[int]]:
        """(positions in the global micro-batch, item indices) of this process's share of ``batch``; strided so that
        a short last batch is spread evenly (a process may get none)."""
        positions = list(range(self.rank, len(batch), self.world))
        return positions, [batch[p] for p in positions]

    def sum_gradients(self, params: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Sum each parameter's gradient and ``loss`` over the processes, in one all-reduce; returns the summed loss.

        A parameter without a gradient on every process keeps none (as a single process would leave it), so that
        the optimiser skips it there too.
        """
        if not self.active:
            return loss
        device = loss.device
        parts = [
            p.grad.detach().reshape(-1).float() if p.grad is not None else torch.zeros(p.numel(), device=device)
            for p in params
        ]
        flags = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
        flat = torch.cat([*parts, flags, loss.detach().reshape(1).float()])
        self._all_reduce(flat)
        offset = 0
        for p, has_grad in zip(params, flat[-1 - len(params) : -1].tolist(), strict=True):
            n = p.numel()
            if has_grad:
                grad = flat[offset : offset + n].reshape(p.shape).to(p.dtype)
                p.grad = grad if p.grad is None else p.grad.copy_(grad)
            offset += n
        return flat[-1].to(loss.dtype)

    def any(self, flag: bool) -> bool:
        """Whether any process says ``flag`` (a stop request): all of them then stop at the same step."""
        if not self.active:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        self._call(torch.distributed.all_reduce, value, op=torch.distributed.ReduceOp.SUM, group=self.control)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.active:
            self._call(torch.distributed.barrier, group=self.control)

    def _all_reduce(self, tensor: torch.Tensor) -> None:
        self._call(torch.distributed.all_reduce, tensor, op=torch.distributed.ReduceOp.SUM)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, torch.distributed.DistError) as exc:
            raise PeerLost(
                f"rank {self.rank} of {self.world}: another training process stopped or cannot be reached "
                f"({_first_sentence(exc)}); this process stops too. The files of the last saved epoch are kept: "
                "run the same command with --resume (the run needs --save-state) to continue it"
            ) from None


def _first_sentence(exc: Exception) -> str:
    """The gist of a backend error: gloo's start with a source location and go on for lines."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    return text.split(". ")[0][:200]


SOLO = Group()


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launcher_problem() -> str | None:
    """What is missing from the launcher's environment (None if it is complete or there is no launcher)."""
    if not launched():
        return None
    missing = [name for name in LAUNCHER_VARS if not os.environ.get(name)]
    if missing:
        return (
            f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set; start the processes with torchrun or accelerate launch"
        )
    return None


def process_device(requested: torch.device) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` when CUDA was asked for (``--device cuda`` or ``auto``) in a
    launched run, else ``requested``; SettingsError naming the fix for an incomplete launch or a pinned GPU."""
    from lib_lora_train.settings import SettingsError

    if not launched():
        return requested
    problem = launcher_problem()
    if problem:
        raise SettingsError("device", problem)
    if requested.type != "cuda":
        return requested
    if requested.index is not None:
        raise SettingsError("device", f"--device {requested}: with several processes each one uses cuda:LOCAL_RANK; "
                            "pass --device cuda (or auto) and choose the GPUs with CUDA_VISIBLE_DEVICES")  # fmt: skip
    local = int(os.environ["LOCAL_RANK"])
    if local >= torch.cuda.device_count():
        raise SettingsError("device", f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s); "
                            "start at most that many processes per machine (--nproc-per-node)")  # fmt: skip
    return torch.device("cuda", local)


def timeout_s() -> float:
    value = os.environ.get("LORA_TRAIN_DIST_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"LORA_TRAIN_DIST_TIMEOUT={value!r}: give a number of seconds") from None


def init_from_env(device: torch.device) -> Group:
    """Join the launcher's process group (NCCL for CUDA devices, gloo for the CPU); ``SOLO`` without a launcher."""
    if not launched():
        return SOLO
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend,
            timeout=datetime.timedelta(seconds=timeout_s()),
            device_id=device if device.type == "cuda" else None,
        )
    # one gloo group for the control messages on every backend, so that the CPU runs (and tests) take the GPU's path
    control = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout_s()))
    return Group(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), control)


def teardown(group: Group) -> None:
    if group.active and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
