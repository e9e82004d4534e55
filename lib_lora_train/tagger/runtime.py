"""onnxruntime sessions for tagger models: CUDA when it works, CPU otherwise, and a clear word when the GPU is broken.

The classic failure of the older extension: ``onnxruntime`` and ``onnxruntime-gpu`` installed side by side (they
share the ``onnxruntime`` import name and overwrite each other's files), or an ``onnxruntime-gpu`` built for another
CUDA/cuDNN than the machine has. onnxruntime then quietly runs on the CPU; we say so and say how to fix it.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib_lora_train.tagger.models import MODEL_FILE, TAGS_FILE
from lib_lora_train.tagger.tag_table import TagTable, load_tag_table

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "ort-nightly")


class TaggerLoadError(RuntimeError):
    """A model folder that cannot be used; the message names the file and the fix."""


def installed_onnxruntime_packages() -> list[str]:
    """The onnxruntime distributions pip has installed (more than one means they overwrite each other)."""
    found = []
    for name in _ORT_DISTRIBUTIONS:
        try:
            found.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def gpu_problem(available: list[str], used: list[str], want_gpu: bool, packages: list[str]) -> str:
    """A message for the user when the GPU was wanted but is not used; empty when all is well."""
    if not want_gpu or CUDA in used:
        return ""
    if len(packages) > 1:
        return (
            f"onnxruntime runs on the CPU because several onnxruntime packages are installed ({', '.join(packages)}); "
            "they overwrite each other. Fix: pip uninstall -y onnxruntime onnxruntime-gpu, then pip install "
            "onnxruntime-gpu (or only onnxruntime for CPU), and restart the WebUI."
        )
    if CUDA in available:
        return (
            "onnxruntime-gpu is installed but its CUDA provider failed to start (a CUDA or cuDNN version that does "
            "not match this onnxruntime-gpu build), so tagging runs on the CPU. Fix: install the onnxruntime-gpu "
            "release built for your CUDA (see onnxruntime.ai CUDA requirements) and restart the WebUI."
        )
    return ""  # a CPU-only onnxruntime: running on the CPU is expected, not a problem


@dataclass(frozen=True)
class ModelInput:
    size: int  # square side in pixels
    fixed_batch: int | None  # None when the batch axis is dynamic


def read_input_contract(session, source: Path) -> ModelInput:
    """Check that the graph takes NHWC [batch, S, S, 3] and say what S and the batch axis are."""
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise TaggerLoadError(f"{source}: expected one input shaped [batch, size, size, 3]; not a WD14 tagger")
    batch, height, width, channels = inputs[0].shape
    if channels != 3 or not isinstance(height, int) or height != width:
        raise TaggerLoadError(
            f"{source}: input shape {inputs[0].shape} is not [batch, size, size, 3] with a fixed square size; "
            "only NHWC WD14-style taggers are supported"
        )
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    return ModelInput(size=height, fixed_batch=fixed)


def _new_session(ort, model_path: Path, providers: list[str]):
    options = ort.SessionOptions()
    if providers == [CPU]:
        # Busy-waiting worker threads steal the cores our decode threads need; measured on 2 cores, a pipelined
        # folder job went from ~80% to ~94% of raw session throughput with spinning off, raw speed unchanged.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), options, providers=providers)


class LoadedTagger:
    """One model in memory: its session, input contract and tag table. ``run`` accepts any batch length."""

    def __init__(self, name: str, folder: str | os.PathLike, *, use_gpu: bool = True):
        import onnxruntime as ort

        self.name = name
        self.folder = Path(folder)
        model_path, tags_path = self.folder / MODEL_FILE, self.folder / TAGS_FILE
        for path in (model_path, tags_path):
            if not path.is_file():
                raise TaggerLoadError(f"{path} is missing; a tagger folder needs {MODEL_FILE} and {TAGS_FILE}")
        self.tags: TagTable = load_tag_table(tags_path)
        available = ort.get_available_providers()
        wanted = [CUDA, CPU] if use_gpu and CUDA in available else [CPU]
        try:
            session = _new_session(ort, model_path, wanted)
        except Exception as exc:
            if wanted == [CPU]:
                raise TaggerLoadError(f"{model_path}: onnxruntime cannot load it ({exc}); download it again") from exc
            session = _new_session(ort, model_path, [CPU])  # GPU broke: keep tagging on the CPU
        self.session = session
        self.providers = list(session.get_providers())
        self.warning = gpu_problem(available, self.providers, use_gpu, installed_onnxruntime_packages())
        contract = read_input_contract(session, model_path)
        self.input_size, self.fixed_batch = contract.size, contract.fixed_batch
        self.input_name = session.get_inputs()[0].name
        self.output_name = session.get_outputs()[0].name
        out_shape = session.get_outputs()[0].shape
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != len(self.tags)):
            raise TaggerLoadError(
                f"{model_path} gives {out_shape[-1]} outputs but {tags_path} lists {len(self.tags)} tags; "
                "the two files come from different models - download both again"
            )

    @property
    def on_gpu(self) -> bool:
        return CUDA in self.providers

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) float32 -> (N, tags) probabilities; fixed-batch graphs get chunks, the last one padded."""
        session = self.session
        if session is None:
            raise TaggerLoadError(f"the model {self.name} was unloaded while in use; start the job again")
        if self.fixed_batch is None:
            return session.run([self.output_name], {self.input_name: batch})[0]
        size = self.fixed_batch
        outputs = []
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            if len(chunk) < size:
                pad = np.zeros((size - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outputs.append(session.run([self.output_name], {self.input_name: chunk})[0])
        return np.concatenate(outputs)[: len(batch)]

    def close(self) -> None:
        """Drop the session so that onnxruntime frees its memory (GPU memory included)."""
        self.session = None


class ModelManager:
    """Loaded models by name, shared by the tab and the API; thread-safe."""

    def __init__(self, *, use_gpu: bool = True):
        self.use_gpu = use_gpu
        self._loaded: dict[str, LoadedTagger] = {}
        self._lock = threading.Lock()

    def get(self, name: str, folder: str | os.PathLike) -> LoadedTagger:
        """The loaded model ``name`` from ``folder``, loading it on first use."""
        with self._lock:
            tagger = self._loaded.get(name)
            if tagger is None or tagger.session is None or tagger.folder != Path(folder):
                tagger = LoadedTagger(name, folder, use_gpu=self.use_gpu)
                self._loaded[name] = tagger
            return tagger

    def loaded_names(self) -> list[str]:
        with self._lock:
            return sorted(self._loaded)

    def unload_all(self) -> int:
        """Free every session; returns how many models were unloaded."""
        with self._lock:
            count = len(self._loaded)
            for tagger in self._loaded.values():
                tagger.close()
            self._loaded.clear()
        import gc

        gc.collect()
        return count
