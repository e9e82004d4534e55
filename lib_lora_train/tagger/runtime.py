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

from lib_lora_train.tagger.models import (
    MLD,
    MLD_INPUT_SIDE,
    MLD_TAGS_FILE,
    MODEL_FILE,
    TAGS_FILE,
    WD14,
    ModelSpec,
    locate_files,
)
from lib_lora_train.tagger.preprocess import InputLayout
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
    layout: InputLayout
    fixed_batch: int | None  # None when the batch axis is dynamic

    @property
    def size(self) -> int:
        return self.layout.size


def read_input_contract(session, source: Path, family: str = WD14, side: int | None = None) -> ModelInput:
    """Check the graph's input and say how to feed it.

    WD14: NHWC [batch, S, S, 3] with a fixed S. ML-Danbooru: NCHW [batch, 3, H, W]; a free H and W take images
    with their aspect ratio kept (short side ``side``), a fixed square takes squares of that size.
    """
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        kind = "[batch, 3, height, width]" if family == MLD else "[batch, size, size, 3]"
        raise TaggerLoadError(f"{source}: expected one input shaped {kind}; not a {_FAMILY_NAMES[family]} tagger")
    shape = inputs[0].shape
    batch = shape[0]
    fixed = batch if isinstance(batch, int) and batch > 0 else None
    if family == MLD:
        channels, height, width = shape[1:]
        if channels != 3:
            raise TaggerLoadError(
                f"{source}: input shape {shape} is not [batch, 3, height, width]; not an ML-Danbooru tagger"
            )
        if isinstance(height, int) and isinstance(width, int):
            if height != width:
                raise TaggerLoadError(
                    f"{source}: input shape {shape} has a fixed size that is not square; only ML-Danbooru graphs "
                    "with a free height and width or a fixed square input are supported"
                )
            return ModelInput(InputLayout(MLD, height), fixed)
        return ModelInput(InputLayout(MLD, side or MLD_INPUT_SIDE, keep_ratio=True), fixed)
    height, width, channels = shape[1:]
    if channels != 3 or not isinstance(height, int) or height != width:
        raise TaggerLoadError(
            f"{source}: input shape {shape} is not [batch, size, size, 3] with a fixed square size; "
            "only NHWC WD14-style taggers (and ML-Danbooru with classes.json) are supported"
        )
    return ModelInput(InputLayout(WD14, height), fixed)


_FAMILY_NAMES = {WD14: "WD14", MLD: "ML-Danbooru"}


def _new_session(ort, model_path: Path, providers: list[str]):
    options = ort.SessionOptions()
    if providers == [CPU]:
        # Busy-waiting worker threads steal the cores our decode threads need; measured on 2 cores, a pipelined
        # folder job went from ~80% to ~94% of raw session throughput with spinning off, raw speed unchanged.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_path), options, providers=providers)


class LoadedTagger:
    """One model in memory: its session, input layout and tag table. ``run`` accepts any batch length."""

    def __init__(self, name: str, folder: str | os.PathLike, *, use_gpu: bool = True, spec: ModelSpec | None = None):
        import onnxruntime as ort

        self.name = name
        self.folder = Path(folder)
        files = locate_files(self.folder, spec)
        if files is None:
            raise TaggerLoadError(_missing_files(self.folder, spec))
        model_path, tags_path = files.model, files.tags
        self.family = files.family
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
        contract = read_input_contract(session, model_path, self.family, spec.input_side if spec else None)
        self.layout = contract.layout
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
        """(N, ...) float32 -> (N, tags) probabilities; fixed-batch graphs get chunks, the last one padded."""
        session = self.session
        if session is None:
            raise TaggerLoadError(f"the model {self.name} was unloaded while in use; start the job again")
        if self.fixed_batch is None:
            outputs = session.run([self.output_name], {self.input_name: batch})[0]
        else:
            size = self.fixed_batch
            parts = []
            for start in range(0, len(batch), size):
                chunk = batch[start : start + size]
                if len(chunk) < size:
                    pad = np.zeros((size - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                parts.append(session.run([self.output_name], {self.input_name: chunk})[0])
            outputs = np.concatenate(parts)[: len(batch)]
        if self.family == MLD:  # ML-Danbooru graphs end at the logits
            with np.errstate(over="ignore"):  # exp(-logit) overflows to inf for very negative logits: 1/inf = 0
                outputs = 1.0 / (1.0 + np.exp(-outputs))
        return outputs

    def close(self) -> None:
        """Drop the session so that onnxruntime frees its memory (GPU memory included)."""
        self.session = None


class ModelManager:
    """Loaded models by name, shared by the tab and the API; thread-safe."""

    def __init__(self, *, use_gpu: bool = True):
        self.use_gpu = use_gpu
        self._loaded: dict[str, LoadedTagger] = {}
        self._lock = threading.Lock()

    def get(self, name: str, folder: str | os.PathLike, spec: ModelSpec | None = None) -> LoadedTagger:
        """The loaded model ``name`` from ``folder``, loading it on first use."""
        with self._lock:
            tagger = self._loaded.get(name)
            if tagger is None or tagger.session is None or tagger.folder != Path(folder):
                tagger = LoadedTagger(name, folder, use_gpu=self.use_gpu, spec=spec)
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


def _missing_files(folder: Path, spec: ModelSpec | None) -> str:
    if spec is not None:
        wanted = f"{spec.model_file} and {spec.tags_file}"
    else:
        wanted = f"{MODEL_FILE} and {TAGS_FILE} (WD14), or one .onnx file and {MLD_TAGS_FILE} (ML-Danbooru)"
    return f"{folder} does not hold a usable model; a tagger folder needs {wanted}"
