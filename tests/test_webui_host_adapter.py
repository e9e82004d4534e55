"""The WebUI host over a stand-in of ``shared.sd_model`` with the WebUI's attribute layout (no WebUI needed)."""

import threading
import types

import pytest
import torch

from lib_lora_train.hosts.model_state import differences, fingerprint
from lib_lora_train.webui.host_adapter import WebUIHost, enable_block_checkpointing, refuse_low_vram
from lib_lora_train.webui.model_parts import UnsupportedModel, layout, model_parts


class Block(torch.nn.Module):
    """Like ldm's BasicTransformerBlock: forward goes through _forward."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x, context=None):
        return self._forward(x, context)

    def _forward(self, x, context=None):
        return self.proj(x) + (0 if context is None else context)


def _sd1_model(**flags):
    unet = torch.nn.Sequential(Block(), Block())
    transformer = torch.nn.Linear(4, 4)
    cond = torch.nn.Module()
    cond.wrapped = torch.nn.Module()
    cond.wrapped.transformer = transformer
    model = torch.nn.Module()
    model.model = torch.nn.Module()
    model.model.diffusion_model = unet
    model.cond_stage_model = cond
    model.first_stage_model = torch.nn.Conv2d(3, 4, 1)
    model.register_buffer("alphas_cumprod", torch.linspace(0.99, 0.01, 1000))
    model.is_sd1, model.is_sd2, model.is_sdxl = True, False, False
    model.parameterization = "eps"
    for name, value in flags.items():
        setattr(model, name, value)
    return model


def _webui(model, **cmd):
    state = types.SimpleNamespace(interrupted=False, textinfo=None, job_count=0, sampling_step=0, sampling_steps=0)
    state.begin = lambda job: state.__dict__.update(began=job, interrupted=False)
    state.end = lambda: state.__dict__.update(ended=True)
    opts = types.SimpleNamespace(CLIP_stop_at_last_layers=2, data={})
    shared = types.SimpleNamespace(sd_model=model, state=state, opts=opts, cmd_opts=types.SimpleNamespace(**cmd))
    progress = types.SimpleNamespace(start_task=lambda t: None, finish_task=lambda t: None)
    return types.SimpleNamespace(
        shared=shared,
        devices=types.SimpleNamespace(torch_gc=lambda: None),
        call_queue=types.SimpleNamespace(queue_lock=threading.Lock()),
        progress=progress,
    )


def test_sd1_parts_are_the_loaded_objects_with_the_users_clip_skip():
    model = _sd1_model()
    parts = model_parts(model, clip_skip=2)
    assert parts.arch == "sd1" and parts.prediction == "eps" and parts.clip_skip == 2
    assert parts.unet.module is model.model.diffusion_model and parts.unet.naming == "ldm"
    assert [(t.prefix, t.naming) for t in parts.text_encoders] == [("lora_te", "hf_clip")]
    assert parts.text_encoders[0].module is model.cond_stage_model.wrapped.transformer
    assert parts.num_train_timesteps == 1000


def test_v_prediction_and_the_original_schedule_are_used():
    model = _sd1_model(is_sd1=False, is_sd2=True, parameterization="v")
    model.cond_stage_model.wrapped.model = open_clip = torch.nn.Linear(2, 2)
    model.alphas_cumprod_original = torch.full((1000,), 0.5)
    parts = model_parts(model, clip_skip=1)
    assert parts.prediction == "v" and parts.arch == "sd2" and float(parts.alphas_cumprod[0]) == 0.5
    assert [(t.prefix, t.naming) for t in parts.text_encoders] == [("lora_te", "open_clip")]
    assert parts.text_encoders[0].module is open_clip


def test_sdxl_trains_both_text_encoders_with_sgm_names():
    model = _sd1_model(is_sd1=False, is_sdxl=True)
    te1, te2 = torch.nn.Module(), torch.nn.Module()
    te1.wrapped = torch.nn.Module()
    te1.wrapped.transformer = torch.nn.Linear(2, 2)
    te2.wrapped = torch.nn.Module()
    te2.wrapped.model = torch.nn.Linear(2, 2)
    te1.input_key = te2.input_key = "txt"
    model.conditioner = torch.nn.Module()
    model.conditioner.embedders = torch.nn.ModuleList([te1, te2])
    found = layout(model)
    assert [(t.prefix, t.naming) for t in found.targets] == [
        ("lora_unet", "sgm"),
        ("lora_te1", "hf_clip"),
        ("lora_te2", "open_clip"),
    ]
    assert found.targets[2].module is te2.wrapped.model


@pytest.mark.parametrize("flags", [{"forge_objects": object()}, {"is_sdxl_inpaint": True}])
def test_unsupported_models_are_refused(flags):
    with pytest.raises(UnsupportedModel):
        layout(_sd1_model(**flags))


@pytest.mark.parametrize("flag", ["lowvram", "medvram"])
def test_low_vram_modes_are_refused_before_anything_changes(flag):
    model = _sd1_model()
    host = WebUIHost(_webui(model, **{flag: True}), stop_event=threading.Event())
    before = fingerprint({"m": model})
    with pytest.raises(UnsupportedModel, match=f"--{flag}.*Nothing was changed"), host.training_session():
        pytest.fail("the session must not start")
    assert differences(before, fingerprint({"m": model})) == []
    refuse_low_vram(model, types.SimpleNamespace(medvram_sdxl=True))  # SD1 is unaffected by --medvram-sdxl


def test_session_restores_the_model_after_an_exception_mid_run():
    model = _sd1_model()
    host = WebUIHost(_webui(model), stop_event=threading.Event())
    before = fingerprint({"m": model})
    with pytest.raises(RuntimeError, match="boom"), host.training_session():
        unet = model.model.diffusion_model
        unet[0].proj = torch.nn.Sequential(unet[0].proj)  # an adapter the engine never took out
        model.requires_grad_(False)
        host.set_gradient_checkpointing(True)
        host.use_clip_skip(1)
        raise RuntimeError("boom")
    assert differences(before, fingerprint({"m": model})) == []
    assert "forward" not in model.model.diffusion_model[0].__dict__


def test_run_exclusive_holds_the_queue_lock_once_and_drives_the_webui_state():
    model = _sd1_model()
    webui = _webui(model)
    host = WebUIHost(webui, stop_event=threading.Event())
    inside = host.run_exclusive(lambda: (webui.call_queue.queue_lock.locked(), host.run_exclusive(lambda: "nested")))
    assert inside == (True, "nested")  # the engine's own call inside the job's does not deadlock
    assert webui.shared.state.began == "train_tools" and webui.shared.state.ended
    assert not webui.call_queue.queue_lock.locked()


def test_interrupt_button_and_stop_event_both_stop():
    webui = _webui(_sd1_model())
    stop = threading.Event()
    host = WebUIHost(webui, stop_event=stop)
    assert not host.should_stop()
    webui.shared.state.interrupted = True
    assert host.should_stop()
    webui.shared.state.interrupted = False
    stop.set()
    assert host.should_stop()


def test_progress_goes_to_textinfo_and_the_listener():
    from lib_lora_train.train.events import ProgressEvent

    seen = []
    webui = _webui(_sd1_model())
    host = WebUIHost(webui, stop_event=threading.Event(), listener=seen.append)
    host.report(ProgressEvent("step", 3, 10, 1, 2, loss=0.5))
    assert webui.shared.state.sampling_step == 3 and webui.shared.state.sampling_steps == 10
    assert "step 3/10" in webui.shared.state.textinfo and "0.5000" in webui.shared.state.textinfo
    assert seen and seen[0].step == 3


def test_block_checkpointing_keeps_outputs_and_gives_adapters_gradients_with_frozen_inputs():
    unet = torch.nn.Sequential(Block(), Block())
    unet.requires_grad_(False)
    unet[1].proj.weight.requires_grad_(True)  # stands in for an adapter inside a block
    x = torch.randn(2, 4)
    expected = unet(x)
    undo = enable_block_checkpointing(unet)
    out = unet(x)
    assert torch.allclose(out, expected)
    out.sum().backward()
    assert unet[1].proj.weight.grad is not None and unet[1].proj.weight.grad.abs().sum() > 0
    undo()
    assert all("forward" not in b.__dict__ for b in unet)


class _Posterior:
    def __init__(self, mean):
        self.mean = mean

    def mode(self):
        return self.mean

    def sample(self):
        return self.mean + torch.randn_like(self.mean)


@pytest.mark.parametrize("kind", ["ldm", "sgm"])
def test_image_latents_do_not_depend_on_the_global_random_state(kind):
    model = _sd1_model()
    if kind == "ldm":  # a posterior; get_first_stage_encoding would sample it
        model.encode_first_stage = lambda x: _Posterior(model.first_stage_model(x))
        model.get_first_stage_encoding = lambda z: 0.18215 * (z.sample() if hasattr(z, "sample") else z)
    else:  # sgm samples inside encode_first_stage and its get_first_stage_encoding is the identity
        model.encode_first_stage = lambda x: model.first_stage_model(x) + torch.randn(1)
        model.get_first_stage_encoding = lambda z: z
    host = WebUIHost(_webui(model), stop_event=threading.Event())
    pixels = torch.rand(1, 3, 8, 8)
    torch.manual_seed(1)
    first = host.encode_images(pixels)
    torch.manual_seed(2)
    assert torch.equal(host.encode_images(pixels), first)
    state = torch.get_rng_state()
    host.encode_images(pixels)
    assert torch.equal(torch.get_rng_state(), state)  # the WebUI's own generator is left alone
