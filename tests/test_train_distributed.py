"""Data-parallel training (#14): gloo processes on the CPU, launched as a user launches them (torchrun, or the
launcher's environment variables by hand), against one process training the same global batches."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lib_lora_train.cli import main
from lib_lora_train.hosts.tiny_model import save_tiny_model, write_tiny_dataset
from lib_lora_train.train.distributed import SOLO, Group

EPOCHS = 12
# 3 images x 1 repeat at a global batch of 2: steps of [2, 1] images, so the second step leaves rank 1 without a
# sample (it still joins the gradient sum). Constant lr: the epoch-2 file of a long run is a 2-epoch run's result.
COMMON = (
    "--project p --resolution 64 --rank 4 --alpha 2 --mixed-precision no --device cpu --seed 3 --flip "
    "--caption-dropout 0.3 --lr-scheduler constant --lr-warmup 0 --save-precision fp32 --unet-lr 1e-3 --te-lr 1e-4"
).split()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    base = save_tiny_model(root / "base")
    data = write_tiny_dataset(root / "data", count=3, size=64)
    (data / "2_demo").rename(data / "1_demo")
    outputs = root / "outputs"
    # the reference: one process at batch 2 (the global batch of two processes at batch 1)
    argv = ["train", "--dataset", str(data), "--base", str(base), "--outputs", str(outputs), "--version", "solo"]
    assert main([*argv, *COMMON, "--batch-size", "2", "--epochs", str(EPOCHS), "--save-every", "1"]) == 0
    return root, base, data, outputs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(setup, version, *extra):
    _, base, data, outputs = setup
    return [
        "-m", "lib_lora_train", "train", "--dataset", str(data), "--base", str(base), "--outputs", str(outputs),
        "--version", version, *COMMON, "--batch-size", "1", *extra,
    ]  # fmt: skip


def _env(**extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    return env


def _torchrun(setup, version, *extra, timeout=120):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(_free_port()), *_args(setup, version, *extra)[1:]]  # fmt: skip
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same_weights(a: dict, b: dict, moved_from: dict | None = None):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-5, atol=1e-6), (key, (a[key] - b[key]).abs().max())
    if moved_from is not None:  # the comparison means something: training changed the weights far beyond it
        assert max((a[k] - moved_from[k]).abs().max().item() for k in a) > 1e-4


def test_shards_are_strided_and_cover_the_batch():
    batch = [7, 3, 9]
    shards = [Group(rank, 2).shard(batch) for rank in range(2)]
    assert shards == [([0, 2], [7, 9]), ([1], [3])]
    assert SOLO.shard(batch) == ([0, 1, 2], batch)
    assert Group(1, 4).shard([5]) == ([], [])


def test_two_processes_at_batch_1_end_with_the_weights_of_one_at_batch_2(setup):
    _, _, _, outputs = setup
    run = _torchrun(setup, "pair", "--epochs", "2")
    assert run.returncode == 0, run.stderr[-3000:]
    solo = outputs / "p" / "versions" / "solo" / "checkpoints"
    pair = outputs / "p" / "versions" / "pair"
    _assert_same_weights(
        _weights(pair / "checkpoints" / "p-pair.safetensors"),
        _weights(solo / "p-solo-000002.safetensors"),
        moved_from=_weights(solo / "p-solo-000001.safetensors"),
    )
    with safe_open(str(pair / "checkpoints" / "p-pair.safetensors"), "pt") as f:
        meta = f.metadata()
    assert (meta["ss_batch_size_per_device"], meta["ss_total_batch_size"]) == ("1", "2")
    assert meta["ss_num_batches_per_epoch"] == "2"  # global batches: [2, 1] images
    # rank 0 alone wrote and printed: one loss row per step, one closing line
    assert len((pair / "logs" / "loss.csv").read_text().splitlines()) == 1 + 2 * 2
    assert run.stdout.count("done: trained 4 steps") == 1


@pytest.mark.slow
def test_a_killed_process_stops_the_others_and_resume_continues(setup, tmp_path):
    _, _, _, outputs = setup
    version = outputs / "p" / "versions" / "killed"
    port, procs = str(_free_port()), []
    extra = ("--epochs", str(EPOCHS), "--save-every", "1", "--save-state")
    logs = [open(tmp_path / f"rank{rank}.err", "w+") for rank in range(2)]  # noqa: SIM115 (closed below)
    for rank in range(2):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, *_args(setup, "killed", *extra)], env=env,
                                      stdout=logs[rank], stderr=subprocess.STDOUT))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (version / "state" / "state.json").exists():
            assert procs[0].poll() is None and time.monotonic() < deadline, "no state saved"
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGKILL)
        code = procs[0].wait(timeout=60)  # rank 0 notices by itself (no launcher here to end it)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.flush()
    logs[0].seek(0)
    out = logs[0].read()
    for log in logs:
        log.close()
    assert code == 1, out[-3000:]
    assert "another training process stopped or cannot be reached" in out and "--resume" in out
    assert not (version / "checkpoints" / "p-killed.safetensors").exists()  # it did stop early

    run = _torchrun(setup, "killed", "--resume")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming at step" in run.stderr
    solo = outputs / "p" / "versions" / "solo" / "checkpoints"
    _assert_same_weights(
        _weights(version / "checkpoints" / "p-killed.safetensors"),
        _weights(solo / "p-solo.safetensors"),
        moved_from=_weights(solo / "p-solo-000001.safetensors"),
    )


def test_ctrl_c_under_torchrun_stops_every_process_after_the_same_step(setup):
    """A terminal's Ctrl+C reaches torchrun and its processes, and torchrun passes it on: each process sees it twice
    at once, which must still mean "stop after this step" (state and a partial file saved), not "abort"."""
    _, _, _, outputs = setup
    version = outputs / "p" / "versions" / "interrupted"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
               str(_free_port()), *_args(setup, "interrupted", "--epochs", str(EPOCHS), "--save-every", "1",
                                         "--save-state")[1:]]  # fmt: skip
    run = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (version / "state" / "state.json").exists():
            assert run.poll() is None and time.monotonic() < deadline, "no state saved"
            time.sleep(0.02)
        os.killpg(run.pid, signal.SIGINT)  # what the terminal does: the whole foreground process group
        out, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    partial = sorted((version / "checkpoints").glob("*-partial.safetensors"))
    step = int(json.loads((version / "state" / "state.json").read_text())["step"])
    assert out.count("stopped: stopped at step") == 1, out[-3000:]
    assert len(partial) == 1 and f"step{step:06d}" in partial[0].name and step < 2 * EPOCHS
