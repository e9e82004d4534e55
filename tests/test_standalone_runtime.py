"""The standalone app's runtime without a browser: LoRA files applied to a pipeline as the WebUI's loader would and
taken out bit for bit, the options file, the LoRA list, renders with ``<lora:…>``, Interrupt, and the command line's
answers to bad options (before anything starts)."""

from __future__ import annotations

import threading

import pytest
import torch
from lora_format_trees import one_torch_thread
from test_lora_format_peft import _adapted_layers, _apply, _inject, _layer_effect

from lib_lora_train.cli import main
from lib_lora_train.hosts.tiny_model import build_tiny_pipeline
from lib_lora_train.lora_format import keys, peft_bridge
from lib_lora_train.lora_format.file import save_lora_file
from lib_lora_train.standalone.lora_apply import applied, module_delta, targets_of
from lib_lora_train.standalone.models import LoadedModel
from lib_lora_train.standalone.runtime import StandaloneRuntime
from lib_lora_train.ui import options

pytestmark = pytest.mark.usefixtures(one_torch_thread.__name__)


@pytest.mark.parametrize(
    "network, extra",
    [("lora", {}), ("locon", {}), ("loha", {}), ("loha", {"cp": True}), ("lokr", {}), ("lokr", {"lokr_rank": 1}),
     ("lokr", {"lokr_rank": 1, "cp": True})],
    ids=["lora", "locon", "loha", "loha-cp", "lokr-full", "lokr-decomposed", "lokr-cp"],
)  # fmt: skip
def test_each_module_delta_is_what_the_adapter_added(network, extra):
    for target in _inject(network, **extra):
        tensors = peft_bridge.adapter_state_dict(target, keys.kohya_module_names(target), network, 2.0, 1.0)
        grouped: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            module, _, part = key.partition(".")
            grouped.setdefault(module, {})[part] = value
        for _path, name, layer in _adapted_layers(target):
            effect, x = _layer_effect(layer)
            base = layer.get_base_layer()
            rebuilt = _apply(base, module_delta(grouped[name], base.weight.shape), x)
            torch.testing.assert_close(rebuilt, effect, rtol=1e-4, atol=1e-6, msg=name)


def _random_lora(pipe, path, *, rank=2, scale=0.05):
    """A kohya LoRA file with a random delta on every UNet and text-encoder linear the trainer targets."""
    generator = torch.Generator().manual_seed(3)
    tensors = {}
    for target in targets_of(pipe):
        names = keys.kohya_module_names(target)
        for module_path, name in names.items():
            layer = target.module.get_submodule(module_path)
            if not isinstance(layer, torch.nn.Linear):
                continue
            tensors[f"{name}.lora_down.weight"] = torch.randn(rank, layer.in_features, generator=generator) * scale
            tensors[f"{name}.lora_up.weight"] = torch.randn(layer.out_features, rank, generator=generator) * scale
            tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    tensors["lora_unet_no_such_block.lora_down.weight"] = torch.zeros(rank, 4)
    tensors["lora_unet_no_such_block.lora_up.weight"] = torch.zeros(4, rank)
    save_lora_file(path, tensors, {"ss_network_module": "networks.lora"})
    return path


def _weights(pipe):
    return {k: v.clone() for part in (pipe.unet, pipe.text_encoder) for k, v in part.state_dict().items()}


def test_applied_changes_the_weights_and_restores_them_bit_for_bit(tmp_path):
    pipe = build_tiny_pipeline(0)
    lora = _random_lora(pipe, tmp_path / "probe.safetensors")
    before = _weights(pipe)
    with applied(pipe, [(lora, 0.8)]) as notes:
        inside = _weights(pipe)
        assert any(not torch.equal(before[k], inside[k]) for k in before)
        assert notes and "1 module(s) do not match" in notes[0]
    assert all(torch.equal(before[k], v) for k, v in _weights(pipe).items())
    with pytest.raises(RuntimeError, match="boom"), applied(pipe, [(lora, 1.0)]):
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in _weights(pipe).items())


@pytest.fixture
def runtime(tmp_path):
    rt = StandaloneRuntime(outputs=tmp_path / "outputs" / "train_tools", models_dir=tmp_path / "models" / "tagger",
                           lora_dir=tmp_path / "Lora", cache_dir=tmp_path / "cache")  # fmt: skip
    rt.model.loaded = LoadedModel(tmp_path / "tiny", build_tiny_pipeline(0), "sd1")
    return rt


def test_options_are_validated_then_saved_and_read_back(runtime, tmp_path):
    with pytest.raises(ValueError, match="Publish trained epochs"):
        runtime.set_options({options.PUBLISH_MODE: "teleport"})
    assert not runtime.settings_file.exists()  # nothing written for a refused value
    runtime.set_options({options.PUBLISH_MODE: "copy", options.TAGGER_GENERAL: "0.5"})
    again = StandaloneRuntime(outputs=runtime.outputs, models_dir=runtime.tagger_dir(), lora_dir=runtime.lora_dir(),
                              cache_dir=tmp_path / "cache")  # fmt: skip
    assert again.option(options.PUBLISH_MODE) == "copy"
    assert again.option(options.TAGGER_GENERAL) == 0.5
    assert again.option(options.PUBLISH_SUBFOLDER) == "train_tools"  # untouched: the default


def test_folders_come_from_the_command_line_until_an_option_names_others(runtime, tmp_path):
    from lib_lora_train.ui import services
    from lib_lora_train.ui.runtime import installed
    from lib_lora_train.ui.tagger.settings import read_tagger_settings

    with installed(runtime):
        assert services.output_root() == tmp_path / "outputs" / "train_tools"
        assert read_tagger_settings().config.models_dir == str(tmp_path / "models" / "tagger")
        runtime.set_options({options.OUTPUT_DIR: str(tmp_path / "elsewhere")})
        assert services.output_root() == tmp_path / "elsewhere"


def test_renders_apply_the_prompt_loras_and_interrupt_stops(runtime):
    pipe = runtime.model.loaded.pipe
    (runtime.lora_dir() / "sub").mkdir(parents=True)
    _random_lora(pipe, runtime.lora_dir() / "sub" / "probe.safetensors", scale=0.5)
    assert runtime.available_lora_names() == {"probe"}
    size = dict(seed=1, steps=2, cfg_scale=5.0, width=64, height=64, sampler="Euler")
    plain, _ = runtime.render("a cat", **size)
    again, _ = runtime.render("a cat", **size)
    with_lora, info = runtime.render("a cat <lora:probe:1>", **size)
    assert plain.tobytes() == again.tobytes()  # the LoRA of the previous call left nothing behind
    assert with_lora.tobytes() != plain.tobytes()
    assert info.startswith("a cat <lora:probe:1>\n") and "Sampler: Euler" in info
    with pytest.raises(ValueError, match="no such LoRA"):
        runtime.render("a cat <lora:missing:1>", **size)
    runtime.state.begin("test")
    runtime.state.interrupt()
    assert runtime.render("a cat", **size) == (None, "")


def test_training_host_holds_the_gpu_lock(runtime):
    host = runtime.make_training_host(threading.Event(), lambda event: None, None)
    seen = []

    def probe():
        other = threading.Thread(target=lambda: seen.append(runtime.gpu_lock().acquire(timeout=0.2)))
        other.start()
        other.join()
        return "ran"

    assert host.run_exclusive(probe) == "ran"
    assert seen == [False]  # another thread could not take the lock while the job ran
    assert host.model_parts().arch == "sd1"


@pytest.mark.parametrize(
    "argv, message",
    [(["--base", "{tmp}/nothing"], "not a diffusers folder"), (["--auth", "alice"], "--auth takes USER:PASS")],
)
def test_bad_options_are_answered_before_anything_starts(argv, message, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["ui", "--outputs", str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_gpu_calls_report_progress_and_show_errors_in_the_page(runtime):
    seen = []

    class Progress:
        def __call__(self, value, desc=None):
            seen.append((value, desc))

    def job(task, name):
        runtime.state.job_count, runtime.state.job_no, runtime.state.textinfo = 4, 1, f"tagging {name}"
        return f"done {name}", ""

    wrapped = runtime.wrap_gpu_call(job, extra_outputs=[""])
    assert wrapped(Progress(), "task-1", "folder") == ("done folder", "")
    assert seen[-1] == ((1, 4), "tagging folder")

    def broken(task):
        raise FileNotFoundError("/no/such/folder: no such folder")

    summary, info = runtime.wrap_gpu_call(broken, extra_outputs=[""])(Progress(), "task-2")
    assert summary == "" and "FileNotFoundError: /no/such/folder: no such folder" in info
    assert runtime.gpu_lock().acquire(timeout=0.1)  # released after the error
    runtime.gpu_lock().release()
