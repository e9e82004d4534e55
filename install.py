"""Installer that the AUTOMATIC1111 WebUI runs at extension install and at every launch (not under --skip-install).

It installs only what is missing and never upgrades or replaces a package the WebUI already has: the WebUI pins
torch, gradio 3.41, transformers 4.30, accelerate 0.21, fastapi 0.94 / pydantic 1 and huggingface_hub, and a
newer copy of any of them breaks it. Installed versions are read with importlib.metadata (no pip, no torch import),
so a launch with everything present returns in well under a second. When pip must run, every package the WebUI
already has is passed as a constraint pinned to its installed version, so pip cannot move it while resolving.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

# What the extension adds to the WebUI, in one place: requirements/runtime.txt, which the tests install too, so
# that users get the versions the tests ran with (why each version: see the comments in that file).
RUNTIME_REQUIREMENTS = Path(__file__).resolve().parent / "requirements" / "runtime.txt"


def read_requirements(path: Path = RUNTIME_REQUIREMENTS) -> dict[str, str]:
    """Canonical name -> requirement line, for every requirement in ``path`` (comments and blank lines skipped)."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            found[canonical(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0])] = line
    return found


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name (``Pillow`` and ``pillow``, ``huggingface-hub`` and ``huggingface_hub``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


_REQUIRED = read_requirements()
# The tagger runs WD14 ONNX models: the GPU build when the WebUI's torch has CUDA, the CPU build otherwise (same
# version range: the GPU wheels follow the CPU ones).
ONNX_CPU = _REQUIRED.pop("onnxruntime")
ONNX_GPU = "onnxruntime-gpu" + ONNX_CPU[len("onnxruntime") :]
REQUIREMENTS = _REQUIRED  # everything else (peft)
# Packages the WebUI owns: never upgraded, pinned as constraints when pip runs for something else.
HOST_PACKAGES = (
    "torch",
    "torchvision",
    "gradio",
    "gradio_client",
    "transformers",
    "accelerate",
    "fastapi",
    "pydantic",
    "huggingface_hub",
    "safetensors",
    "numpy",
    "Pillow",
    "tokenizers",
    "starlette",
    "httpx",
    "protobuf",
)


@dataclass(frozen=True)
class PipInstall:
    """One package to install: the requirement string and why it is needed."""

    requirement: str
    reason: str


def installed_versions(names) -> dict[str, str]:
    """Installed version of each named distribution that is present, keyed by canonical name."""
    found = {}
    for name in names:
        try:
            found[canonical(name)] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def torch_has_cuda(torch_version: str | None, installed: dict[str, str]) -> bool:
    """Whether the WebUI's torch is a CUDA build, judged from package metadata so that torch need not be imported.

    Wheels from the PyTorch index carry a local tag (``2.1.2+cu121``, ``+cpu``, ``+rocm5.6``); the plain PyPI wheels on
    Linux are CUDA builds and pull the ``nvidia-*`` runtime packages in beside them.
    """
    if not torch_version:
        return False
    local = torch_version.partition("+")[2]
    if local:
        return local.startswith("cu")
    return any(name.startswith("nvidia-cuda-runtime") for name in installed)


def plan_installs(installed: dict[str, str], *, cuda: bool) -> list[PipInstall]:
    """Decide what to install, given ``installed`` (canonical name -> version). Present packages are left alone."""
    plan = []
    for name, requirement in REQUIREMENTS.items():
        if canonical(name) not in installed:
            plan.append(PipInstall(requirement, f"{name} is missing"))
    if not any(canonical(n) in installed for n in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml")):
        plan.append(
            PipInstall(
                ONNX_GPU if cuda else ONNX_CPU, "the tagger needs ONNX Runtime (" + ("CUDA" if cuda else "CPU") + ")"
            )
        )
    return plan


def constraints_text(installed: dict[str, str]) -> str:
    """A pip constraints file that pins every host package present to its installed version."""
    wanted = {canonical(n) for n in HOST_PACKAGES}
    return "".join(f"{name}=={version}\n" for name, version in sorted(installed.items()) if name in wanted)


def packages_to_look_up() -> list[str]:
    """Every distribution whose presence the plan depends on."""
    return [*REQUIREMENTS, "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", *HOST_PACKAGES]


def main() -> None:
    import launch  # the WebUI's launcher module; on sys.path because the WebUI runs this file with PYTHONPATH set

    if getattr(getattr(launch, "args", None), "skip_install", False):
        return
    installed = installed_versions(packages_to_look_up())
    missing = plan_installs(installed, cuda=False)
    if not missing:
        return
    # Only now is it worth working out whether torch has CUDA (the nvidia runtime lookup is a metadata scan).
    if any(p.requirement.startswith("onnxruntime") for p in missing):
        runtime = {canonical(d.metadata["Name"] or ""): "" for d in importlib.metadata.distributions()}
        missing = plan_installs(installed, cuda=torch_has_cuda(installed.get("torch"), runtime))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
        handle.write(constraints_text(installed))
        constraints = handle.name
    try:
        for item in missing:
            launch.run_pip(
                f'install "{item.requirement}" -c "{constraints}"',
                f"{item.requirement} for LoRA Train Tools ({item.reason})",
            )
    finally:
        os.unlink(constraints)


if __name__ == "__main__":
    main()
