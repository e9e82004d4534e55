"""Start a real Stable Diffusion WebUI Forge on the CPU with this repository linked into its extensions, for
test_forge_live.py: the A1111 server of webui_server.py with Forge's CPU flags, configured by LORA_TRAIN_TOOLS_FORGE
(the Forge folder) and LORA_TRAIN_TOOLS_FORGE_PYTHON (its venv's python). Forge's model recognition does not know
the tiny fixture checkpoints; a host-side extension in the Forge folder teaches it (``extensions/forge-tiny-fixtures``
or the folder named by LORA_TRAIN_TOOLS_FORGE_FIXTURE_EXTENSION), linked into the test's data folder."""

from __future__ import annotations

import os
from pathlib import Path

from webui_server import FIXTURES, WebUI


def fixture_extension() -> Path:
    default = Path(os.environ.get("LORA_TRAIN_TOOLS_FORGE", ".")) / "extensions" / "forge-tiny-fixtures"
    return Path(os.environ.get("LORA_TRAIN_TOOLS_FORGE_FIXTURE_EXTENSION") or default)


def skip_reason() -> str | None:
    folder = os.environ.get("LORA_TRAIN_TOOLS_FORGE")
    if not folder or not os.environ.get("LORA_TRAIN_TOOLS_FORGE_PYTHON"):
        return ("set LORA_TRAIN_TOOLS_FORGE (a Stable Diffusion WebUI Forge folder) and LORA_TRAIN_TOOLS_FORGE_PYTHON "
                "(its venv's python) to run the Forge tests")  # fmt: skip
    if not (Path(folder) / "modules_forge").is_dir():
        return f"LORA_TRAIN_TOOLS_FORGE={folder} is not a Forge folder (no modules_forge/)"
    if not (fixture_extension() / "preload.py").is_file():
        return f"Forge cannot recognise the tiny fixture checkpoints without {fixture_extension()}"
    if not (FIXTURES / "tiny-sd1.safetensors").is_file():
        return f"the tiny WebUI fixtures are missing ({FIXTURES})"
    return None


class Forge(WebUI):
    folder_variable, python_variable = "LORA_TRAIN_TOOLS_FORGE", "LORA_TRAIN_TOOLS_FORGE_PYTHON"
    ready_markers = ("Startup time:",)  # Forge loads the checkpoint at the first generation

    def cpu_flags(self) -> list[str]:
        return ["--always-cpu", "--all-in-fp32", "--skip-version-check", "--skip-python-version-check",
                "--disable-xformers"]  # fmt: skip

    def link_host_extensions(self, folder: Path) -> None:
        (folder / "forge-tiny-fixtures").symlink_to(fixture_extension())
