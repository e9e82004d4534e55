"""install.py: installs only what is missing, never touches the WebUI's own packages, does nothing when all is there."""

import importlib.util
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_install(monkeypatch, fake_launch):
    monkeypatch.setitem(sys.modules, "launch", fake_launch)
    spec = importlib.util.spec_from_file_location("lora_train_tools_install", ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


class FakeLaunch(types.ModuleType):
    def __init__(self, skip_install=False):
        super().__init__("launch")
        self.args = types.SimpleNamespace(skip_install=skip_install)
        self.calls = []

    def run_pip(self, command, desc=None):
        self.calls.append(command)


@pytest.fixture
def install(monkeypatch):
    return _load_install(monkeypatch, FakeLaunch())


WEBUI_PINS = {
    "torch": "2.1.2+cu121",
    "transformers": "4.30.2",
    "accelerate": "0.21.0",
    "gradio": "3.41.2",
    "fastapi": "0.94.0",
    "pydantic": "1.10.15",
    "huggingface-hub": "0.25.2",
}


def test_everything_present_installs_nothing(install):
    installed = {**WEBUI_PINS, "peft": "0.13.2", "onnxruntime-gpu": "1.17.1"}
    assert install.plan_installs(installed, cuda=True) == []


def test_an_existing_peft_of_another_version_is_left_alone(install):
    # never upgrade or replace: a user's own peft stays, whatever its version
    installed = {**WEBUI_PINS, "peft": "0.10.0", "onnxruntime": "1.16.0"}
    assert install.plan_installs(installed, cuda=False) == []


def test_missing_peft_gets_the_version_that_works_with_accelerate_021(install):
    plan = install.plan_installs({**WEBUI_PINS, "onnxruntime": "1.16.0"}, cuda=True)
    assert [p.requirement for p in plan] == ["peft==0.13.2"]


@pytest.mark.parametrize(
    ("cuda", "expected"), [(True, "onnxruntime-gpu>=1.17,<1.21"), (False, "onnxruntime>=1.17,<1.21")]
)
def test_onnxruntime_flavour_follows_torch(install, cuda, expected):
    plan = install.plan_installs({**WEBUI_PINS, "peft": "0.13.2"}, cuda=cuda)
    assert [p.requirement for p in plan] == [expected]


@pytest.mark.parametrize(
    ("version", "runtime", "expected"),
    [
        ("2.1.2+cu121", {}, True),
        ("2.1.2+cpu", {}, False),
        ("2.1.2+rocm5.6", {}, False),
        ("2.13.0", {"nvidia-cuda-runtime-cu12": ""}, True),
        ("2.13.0", {}, False),
        (None, {}, False),
    ],
)
def test_torch_cuda_is_read_from_metadata(install, version, runtime, expected):
    assert install.torch_has_cuda(version, runtime) is expected


def test_constraints_pin_every_host_package_present(install):
    text = install.constraints_text({**WEBUI_PINS, "peft": "0.13.2"})
    assert "transformers==4.30.2\n" in text and "accelerate==0.21.0\n" in text and "torch==2.1.2+cu121\n" in text
    assert "peft" not in text  # our own packages are not frozen


def test_main_runs_pip_only_for_what_is_missing_with_constraints(monkeypatch):
    launch = FakeLaunch()
    install = _load_install(monkeypatch, launch)
    monkeypatch.setattr(install, "installed_versions", lambda names: {**WEBUI_PINS, "onnxruntime": "1.16"})
    install.main()
    assert len(launch.calls) == 1
    assert launch.calls[0].startswith('install "peft==0.13.2" -c "')


def test_skip_install_does_nothing(monkeypatch):
    launch = FakeLaunch(skip_install=True)
    install = _load_install(monkeypatch, launch)
    monkeypatch.setattr(install, "installed_versions", lambda names: pytest.fail("looked packages up"))
    install.main()
    assert launch.calls == []


def test_second_run_with_everything_present_is_fast_and_calls_no_pip(monkeypatch):
    launch = FakeLaunch()
    install = _load_install(monkeypatch, launch)
    real = install.installed_versions
    monkeypatch.setattr(
        install, "installed_versions", lambda names: {**real(names), "peft": "0.13.2", "onnxruntime": "1.16"}
    )
    started = time.perf_counter()
    install.main()
    assert launch.calls == []
    assert time.perf_counter() - started < 2.0


def test_what_install_py_adds_is_what_the_tests_install(install):
    # one source of truth: requirements/runtime.txt is installed by tools/setup_venv.sh and read by install.py
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines()]
    wanted = sorted(line for line in lines if line)
    plan = install.plan_installs(dict(WEBUI_PINS, torch="2.13.0+cpu"), cuda=False)
    assert sorted(p.requirement for p in plan) == wanted
    gpu = install.plan_installs(WEBUI_PINS, cuda=True)
    assert sorted(p.requirement for p in gpu) == sorted(w.replace("onnxruntime", "onnxruntime-gpu") for w in wanted)
