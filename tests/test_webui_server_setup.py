"""The live-WebUI harness installs what our install.py adds before starting a WebUI with --skip-install, as the
WebUI itself would at its prepare step, and says what to do when that fails (no WebUI needed for this test)."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import webui_server


def _server(tmp_path, monkeypatch):
    (tmp_path / "webui").mkdir()
    monkeypatch.setenv("LORA_TRAIN_TOOLS_WEBUI", str(tmp_path / "webui"))
    monkeypatch.setenv("LORA_TRAIN_TOOLS_WEBUI_PYTHON", sys.executable)
    return webui_server.WebUI(tmp_path / "work")


def test_a_webui_without_peft_gets_our_install_py_run_as_the_webui_runs_it(tmp_path, monkeypatch):
    server = _server(tmp_path, monkeypatch)
    calls, state = [], {"installed": False}

    def fake_run(args, **kwargs):
        calls.append((args, kwargs))
        if args[-1].endswith("install.py"):
            state["installed"] = True
            return SimpleNamespace(returncode=0, stdout="", stderr="")
        return SimpleNamespace(returncode=0 if state["installed"] else 1, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    server.ensure_installed()
    installer = [(a, k) for a, k in calls if a[-1].endswith("install.py")]
    assert len(installer) == 1
    args, kwargs = installer[0]
    assert args[0] == sys.executable and kwargs["cwd"] == server.folder  # from the WebUI's folder: `import launch`
    assert kwargs["env"]["PYTHONPATH"].split(":")[0] == str(server.folder)


def test_it_says_what_to_do_when_the_install_cannot_help(tmp_path, monkeypatch):
    server = _server(tmp_path, monkeypatch)
    monkeypatch.setattr(subprocess, "run", lambda args, **kw: SimpleNamespace(returncode=1, stdout="", stderr="no pip"))
    with pytest.raises(RuntimeError, match="(?s)lacks peft/onnxruntime.*pip install -r requirements/runtime.txt"):
        server.ensure_installed()
