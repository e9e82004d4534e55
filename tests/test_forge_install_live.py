"""Install from a clone under a real Stable Diffusion WebUI Forge (set LORA_TRAIN_TOOLS_FORGE and
LORA_TRAIN_TOOLS_FORGE_PYTHON; see forge_server.py): this repository is git-cloned into <tmp>/extensions and Forge's own
prepare step (modules.launch_utils.run_extensions_installers, called the way launch.py calls it) runs our install.py.
In Forge's venv, where everything is present, it runs cleanly, starts no pip and changes no installed version. In a
throwaway venv that sees Forge's packages except peft, it installs peft at the version requirements/runtime.txt pins,
into that venv only, and every other distribution (gradio 4.40, pydantic 2, torch, ...) keeps Forge's version.

Forge's runner catches a failing install.py, prints the error as "*** ..." lines and carries on with exit status 0,
so these tests read what Forge ran and how each command ended instead of trusting the exit status."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from forge_server import skip_reason

pytestmark = [pytest.mark.webui, pytest.mark.slow]
if skip_reason():
    pytest.skip(skip_reason(), allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
FORGE = Path(os.environ["LORA_TRAIN_TOOLS_FORGE"])
FORGE_PYTHON = os.environ["LORA_TRAIN_TOOLS_FORGE_PYTHON"]

# Run with a Forge python in Forge's folder, like launch.py; prepare_environment() makes exactly this call. run() is
# wrapped only to record each command and how it ended, which run_extension_installer itself swallows.
DRIVER = """
import json
from modules import launch_utils
calls, real_run = [], launch_utils.run
def run(command, *args, **kwargs):
    try:
        out = real_run(command, *args, **kwargs)
    except Exception as error:
        calls.append({"command": command, "error": str(error)})
        raise
    calls.append({"command": command, "stdout": out})
    return out
launch_utils.run = run
launch_utils.run_extensions_installers(settings_file=launch_utils.args.ui_settings_file)
print("RESULT " + json.dumps({"python": launch_utils.python, "calls": calls}))
"""
SNAPSHOT = "import importlib.metadata as m, json; print(json.dumps([[d.metadata['Name'], d.version] for d in m.distributions()]))"


def _output(command: list[str]) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=120).stdout.strip()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A Forge --data-dir whose extensions/ holds a fresh clone of this repository (its committed HEAD)."""
    data = tmp_path_factory.mktemp("forge-data")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(data / "extensions" / "lora-train-tools")], check=True)
    # Forge's built-in controlnet and legacy-preprocessor installers would pip-install fvcore, mediapipe, svglib, ...
    # into the shared venv; settings can disable them (as a user's can), leaving only the extension under test.
    builtin = sorted(p.name for p in (FORGE / "extensions-builtin").iterdir())
    (data / "config.json").write_text(json.dumps({"disabled_extensions": builtin}), encoding="utf-8")
    return data


@pytest.fixture
def install(data_dir, monkeypatch):
    """The clone's install.py as a module (its plan and package lists; it imports Forge's launch only in main())."""
    spec = importlib.util.spec_from_file_location("cloned_install", data_dir / "extensions/lora-train-tools/install.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _env(pip_log: Path, **extra: str) -> dict[str, str]:
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "COMMANDLINE_ARGS")  # ours, or flags such as --skip-install
    env = {k: v for k, v in os.environ.items() if k not in drop}
    # No .pyc files in Forge's folder; PIP_LOG makes every pip run, at any depth, leave a log file behind.
    env.update(PYTHONDONTWRITEBYTECODE="1", PIP_LOG=str(pip_log), **extra)
    return env


def _snapshot(install, python: str) -> dict[str, str]:
    """Canonical name -> version of every distribution ``python`` sees (a name seen twice fails: no shadowing)."""
    pairs = json.loads(_output([python, "-c", SNAPSHOT]))
    versions = {install.canonical(name): version for name, version in pairs}
    assert len(versions) == len(pairs), "a distribution is installed twice"
    return versions


def _run_forge_installers(python: str, data: Path, env: dict[str, str]) -> dict:
    command = [python, "-c", DRIVER, "--data-dir", str(data), "--ui-settings-file", str(data / "config.json")]
    proc = subprocess.run(command, cwd=FORGE, env=env, text=True, capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "***" not in proc.stderr, proc.stderr  # errors.report's marker: Forge caught a failure
    result = json.loads(next(line[len("RESULT ") :] for line in proc.stdout.splitlines() if line.startswith("RESULT ")))
    # Exactly one installer ran, ours from the clone, with the python Forge runs everything with, and it succeeded.
    [call] = result["calls"]
    assert call["command"] == f'"{result["python"]}" "{data / "extensions" / "lora-train-tools" / "install.py"}"'
    assert "error" not in call, call["error"]
    return call


def test_in_forges_venv_the_clones_installer_starts_no_pip_and_changes_no_version(data_dir, install, tmp_path):
    before = _snapshot(install, FORGE_PYTHON)
    assert install.plan_installs(before, cuda=False) == [], "Forge's venv should already hold peft and onnxruntime"
    pip_log = tmp_path / "pip.log"
    # Should a regression start pip anyway, it could find nothing to put into the shared venv: no index, no links.
    env = _env(pip_log, PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_FIND_LINKS="")
    call = _run_forge_installers(FORGE_PYTHON, data_dir, env)
    assert call["stdout"] == ""  # run_pip would have printed "Installing ..."
    assert not pip_log.exists(), pip_log.read_text()
    assert _snapshot(install, FORGE_PYTHON) == before


def _venv_without_peft(root: Path) -> str:
    """A new venv of Forge's base interpreter that sees Forge's site-packages, peft excepted, through symlinks.

    The links lie outside the new venv: pip installs into the venv it runs in and never uninstalls a distribution
    outside it, so nothing can reach Forge's venv through them. addsitedir (not a plain path line) also runs Forge's
    own .pth files (protobuf's namespace package needs one). pip itself is Forge's, as when Forge runs it."""
    where = "import json, sys, sysconfig; print(json.dumps([sys._base_executable, sysconfig.get_paths()['purelib']]))"
    base, site = json.loads(_output([FORGE_PYTHON, "-c", where]))
    subprocess.run([base, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120)
    python = str(root / "venv" / "bin" / "python")
    farm = root / "forge-site-packages-without-peft"
    farm.mkdir()
    for entry in Path(site).iterdir():
        if entry.name != "peft" and not (entry.name.startswith("peft-") and entry.name.endswith(".dist-info")):
            (farm / entry.name).symlink_to(entry)
    own_site = Path(_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]))
    (own_site / "forge-without-peft.pth").write_text(f"import site; site.addsitedir({str(farm)!r})\n", encoding="utf-8")
    return python


def test_with_peft_missing_the_clones_installer_installs_only_peft_and_keeps_forges_pins(data_dir, install, tmp_path):
    peft = install.REQUIREMENTS["peft"]
    assert peft.startswith("peft=="), peft
    python = _venv_without_peft(tmp_path)
    forge_before = _snapshot(install, FORGE_PYTHON)
    before = _snapshot(install, python)
    assert before == {k: v for k, v in forge_before.items() if k != "peft"}  # Forge's environment, peft hidden

    pip_log = tmp_path / "pip.log"  # slow part: pip resolves against all of Forge's packages and fetches peft
    call = _run_forge_installers(python, data_dir, _env(pip_log))
    assert [line for line in call["stdout"].splitlines() if line.startswith("Installing ")] == [
        f"Installing {peft} for LoRA Train Tools (peft is missing)"
    ]
    assert pip_log.exists()

    after = _snapshot(install, python)
    assert after == {**before, "peft": peft.removeprefix("peft==")}  # peft added, not one other version moved
    host = sorted({install.canonical(name) for name in install.HOST_PACKAGES} & after.keys())
    assert {n: after[n] for n in host} == {n: forge_before[n] for n in host}
    assert after["gradio"].startswith("4.40.") and after["pydantic"].startswith("2."), after
    where = _output([python, "-c", "import importlib.metadata as m; print(m.distribution('peft').locate_file(''))"])
    assert Path(where).resolve().is_relative_to((tmp_path / "venv").resolve()), where
    assert _snapshot(install, FORGE_PYTHON) == forge_before  # pip wrote nothing into Forge's venv

    # The next launch finds peft and does nothing again.
    again = _run_forge_installers(python, data_dir, _env(tmp_path / "pip-again.log"))
    assert again["stdout"] == "" and not (tmp_path / "pip-again.log").exists()
