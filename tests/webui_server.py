"""Start a real AUTOMATIC1111 WebUI (v1.10.x) on the CPU with this repository linked into its extensions, for the
tests in test_webui_live.py. Configured by LORA_TRAIN_TOOLS_WEBUI (the WebUI folder) and optionally
LORA_TRAIN_TOOLS_WEBUI_PYTHON (its venv's python); uses the tiny fixtures in ../shared/fixtures/webui-tiny."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "webui-tiny"


def skip_reason() -> str | None:
    folder = os.environ.get("LORA_TRAIN_TOOLS_WEBUI")
    if not folder:
        return "set LORA_TRAIN_TOOLS_WEBUI to an AUTOMATIC1111 WebUI v1.10.x folder to run the WebUI tests"
    if not (Path(folder) / "launch.py").is_file():
        return f"LORA_TRAIN_TOOLS_WEBUI={folder} has no launch.py"
    if not (FIXTURES / "tiny-sd1.safetensors").is_file():
        return f"the tiny WebUI fixtures are missing ({FIXTURES})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WebUI:
    """One WebUI process with its own data folder, models folder (the fixtures) and LoRA folder."""

    # the host's folder and python come from these variables (the Forge server in forge_server.py sets its own)
    folder_variable, python_variable = "LORA_TRAIN_TOOLS_WEBUI", "LORA_TRAIN_TOOLS_WEBUI_PYTHON"
    # log lines that say the server is ready (A1111 loads the checkpoint at start-up; Forge at the first generation)
    ready_markers: tuple[str, ...] = ("Startup time:", "Model loaded in")

    def __init__(self, workdir: Path):
        self.folder = Path(os.environ[self.folder_variable])
        self.python = os.environ.get(self.python_variable, sys.executable)
        self.port = _free_port()
        self.data = workdir / "data"
        self.lora_dir = workdir / "Lora"
        self.models = workdir / "models"
        self.log_path = workdir / "webui.log"
        self.process: subprocess.Popen | None = None

    def ensure_installed(self) -> None:
        """Run our install.py as the WebUI does when it prepares its environment (the tests start it with
        --skip-install, so on a WebUI where that never ran, peft would be missing); RuntimeError saying what to do
        when the packages are still missing afterwards."""
        probe = [self.python, "-c", "import peft, onnxruntime"]
        if subprocess.run(probe, capture_output=True, cwd=self.folder).returncode == 0:
            return
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.folder), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run([self.python, str(ROOT / "install.py")], cwd=self.folder, env=env, capture_output=True,
                              text=True, timeout=1800)  # fmt: skip
        if subprocess.run(probe, capture_output=True, cwd=self.folder).returncode != 0:
            raise RuntimeError(
                f"the WebUI's python ({self.python}) lacks peft/onnxruntime and our install.py could not add them "
                f"(exit {done.returncode}): {(done.stdout + done.stderr)[-2000:]}\nStart the WebUI once without "
                "--skip-install, or pip install -r requirements/runtime.txt into its venv."
            )

    def start(self, checkpoint: str = "tiny-sd1", timeout: float = 300, extra_args: tuple[str, ...] = ()) -> None:
        self.ensure_installed()
        (self.data / "extensions").mkdir(parents=True)
        (self.data / "extensions" / "lora-train-tools").symlink_to(ROOT)  # installed the way users clone it
        self.link_host_extensions(self.data / "extensions")
        ckpts = self.models / "Stable-diffusion"
        ckpts.mkdir(parents=True)
        for arch in ("tiny-sd1", "tiny-sd2v", "tiny-sdxl"):
            for suffix in (".safetensors", ".yaml"):
                (ckpts / f"{arch}{suffix}").symlink_to(FIXTURES / f"{arch}{suffix}")
        (self.models / "VAE-approx").mkdir()
        shutil.copy(FIXTURES / "VAE-approx" / "vaeapprox-sdxl.pt", self.models / "VAE-approx")
        self.lora_dir.mkdir()
        for lora in (FIXTURES / "lora").iterdir():
            shutil.copy(lora, self.lora_dir)
        args = [self.python, "launch.py", "--skip-prepare-environment", "--skip-install", "--skip-torch-cuda-test",
                *self.cpu_flags(), "--no-download-sd-model", "--api",
                "--port", str(self.port), "--data-dir", str(self.data), "--models-dir", str(self.models),
                "--lora-dir", str(self.lora_dir), "--ckpt", str(ckpts / f"{checkpoint}.safetensors"),
                "--loglevel", "DEBUG", *extra_args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "COMMANDLINE_ARGS"}
        env.update(HF_HOME=str(FIXTURES / "hf_home"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")  # fmt: skip
        self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(args, cwd=self.folder, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)  # fmt: skip
        deadline = time.time() + timeout
        # a request sent before "Startup time:" can kill the server while it starts
        while not all(marker in self.log() for marker in self.ready_markers):
            if self.process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the WebUI did not start; last log lines:\n{self.log()[-3000:]}")
            time.sleep(1)

    def link_host_extensions(self, folder: Path) -> None:
        """Extensions the host needs beside ours in the test's data folder (none for A1111)."""

    def cpu_flags(self) -> list[str]:
        return ["--use-cpu", "all", "--no-half", "--precision", "full"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        if getattr(self, "_log", None):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def call(self, method: str, path: str, body: dict | None = None, timeout: float = 600, auth: str | None = None):
        """``auth``: "user:password" sent as HTTP basic auth."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers=headers)  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def txt2img(self, prompt: str, seed: int = 1234) -> bytes:
        """Pixels of a 64x64, 4-step image (PNG metadata stripped)."""
        from PIL import Image

        body = {"prompt": prompt, "seed": seed, "steps": 4, "width": 64, "height": 64, "sampler_name": "Euler",
                "cfg_scale": 7}  # fmt: skip
        status, answer = self.call("POST", "/sdapi/v1/txt2img", body)
        assert status == 200, answer
        return Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))).convert("RGB").tobytes()

    def use_checkpoint(self, name: str) -> None:
        status, answer = self.call("POST", "/sdapi/v1/options", {"sd_model_checkpoint": name})
        assert status == 200, answer

    def train(self, project: str, version: str, dataset: Path, timeout: float = 900, **settings) -> dict:
        body = {"project": project, "version": version, "dataset": str(dataset), "settings": settings}
        status, answer = self.call("POST", "/train-tools/v1/train", body)
        assert status == 200, answer
        return self.wait_job(timeout)

    def train_on(self, base_model: str, project: str, version: str, dataset: Path, **settings) -> tuple[dict, dict]:
        """A run on another checkpoint than the loaded one: the finished job and version.json's ``base_model``."""
        body = {"project": project, "version": version, "dataset": str(dataset), "base_model": base_model,
                "settings": settings}  # fmt: skip
        status, answer = self.call("POST", "/train-tools/v1/train", body)
        assert status == 200, answer
        job = self.wait_job()
        assert job["state"] == "done", job["message"]
        assert any(f"loading {base_model.split('.')[0]}" in line for line in job["log"]), job["log"][-8:]
        assert any("back" in line for line in job["log"]), job["log"][-8:]
        folder = Path(job["checkpoints"][-1]).parents[1]
        return job, json.loads((folder / "version.json").read_text())["base_model"]

    def wait_job(self, timeout: float = 900) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            _, answer = self.call("GET", "/train-tools/v1/status?history=true")
            if answer["state"] != "running":
                return answer
            time.sleep(1)
        raise TimeoutError("training did not finish")

    def fingerprint(self, live: bool = False) -> dict:
        status, answer = self.call("GET", "/train-tools/v1/host-fingerprint" + ("?live=true" if live else ""))
        assert status == 200, answer
        return answer


def serve(workdir: Path, checkpoint: str = "tiny-sd1", extra_args: tuple[str, ...] = ()):
    """A started WebUI for a module's tests (``yield from serve(...)`` in a fixture); stopped afterwards."""
    server = WebUI(workdir)
    try:
        server.start(checkpoint, extra_args=extra_args)
        yield server
    finally:
        server.stop()


# a run that takes seconds on the CPU with the tiny fixtures
FAST = dict(rank=4, alpha=4, resolution=64, min_bucket_side=64, max_bucket_side=128, batch_size=1, epochs=2,
            mixed_precision="no", unet_lr=1e-2, te_lr=1e-3, cache_latents="memory", seed=7)  # fmt: skip


def assert_xyz_plot_redraws_every_cell(server: WebUI, answer: dict, epochs: tuple[str, ...]) -> None:
    """Send a compare answer's X/Y/Z hand-off to the host's own X/Y/Z plot: with include_lone_images it returns the
    grid, then the cells row by row (``epochs``: the cell names' epoch parts) over the columns (weights 0.5, 1, then
    the no-LoRA reference), each pixel for pixel the cell Epoch Compare rendered."""
    from PIL import Image, ImageChops

    status, reply = server.call("POST", "/sdapi/v1/txt2img", answer["xyz"][0]["txt2img_payload"], timeout=1800)
    assert status == 200, reply
    plotted = [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for b in reply["images"][1:]]
    cells = f"{answer['folder']}/cells/p1-s1234"
    expected = []
    for epoch in epochs:  # the reference column is one cell, repeated in every row
        expected += [f"{cells}-{epoch}-w0.5.png", f"{cells}-{epoch}-w1.png", f"{cells}-ref-nolora.png"]
    for path, image in zip(expected, plotted, strict=True):
        assert ImageChops.difference(Image.open(path).convert("RGB"), image).getbbox() is None, path


def assert_same_model_but_new_objects(before: dict, after: dict) -> None:
    """Two host fingerprints of one checkpoint, loaded again in between: the host's loader (one checkpoint in memory)
    built the model anew, so object ids ("structure") differ; weights, flags, devices and dtypes must be the same."""
    for part, value in before["parts"].items():
        assert {k: v for k, v in after["parts"][part].items() if k != "structure"} == {
            k: v for k, v in value.items() if k != "structure"
        }, part


def write_alice_dataset(root: Path) -> Path:
    """Two 64 px images of one character in a 1-repeat folder, captioned with its activation tag first."""
    from PIL import Image

    (root / "1_alice").mkdir(parents=True)
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (64, 64), colour).save(root / "1_alice" / f"{i}.png")
        (root / "1_alice" / f"{i}.txt").write_text("alice, red hair", encoding="utf-8")
    return root


def unmatched_keys(log: str, name: str) -> list[str]:
    """The WebUI log's lines saying that LoRA ``name`` had keys its loader could not place."""
    return [line for line in log.splitlines() if name in line and "didn't match keys" in line]
