"""Model list, local folders, aliases, download (mocked hub, no network), provider messages and unloading."""

import shutil

import huggingface_hub
import pytest
from PIL import Image
from tagger_graphs import make_model_folder

from lib_lora_train.tagger.hub import DownloadError, download_model
from lib_lora_train.tagger.models import KNOWN_MODELS, ModelNotFoundError, find_model, list_models
from lib_lora_train.tagger.postprocess import TagOptions
from lib_lora_train.tagger.runtime import CPU, CUDA, ModelManager, gpu_problem
from lib_lora_train.tagger.service import TaggerConfig, TaggerService


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_model_folder(tmp_path_factory.mktemp("src") / "tiny")


def test_known_models_cover_the_wd14_family_with_card_thresholds():
    names = {m.name: m for m in KNOWN_MODELS}
    for name in ("wd-v1-4-vit-tagger", "wd-v1-4-convnext-tagger", "wd-v1-4-moat-tagger-v2", "wd-eva02-large-tagger-v3"):
        assert name in names
    assert names["wd-vit-large-tagger-v3"].repo_id == "SmilingWolf/wd-vit-large-tagger-v3"
    assert len(names) == 18  # 12 WD14 + the 4 v2 models pinned at v2.0 + 2 ML-Danbooru
    assert names["wd-v1-4-vit-tagger-v2"].general_threshold == pytest.approx(0.3537)
    assert names["wd-swinv2-tagger-v3"].general_threshold == pytest.approx(0.2653)  # v3 cards: macro-F1 P=R
    wd14 = [m for m in KNOWN_MODELS if m.family == "wd14"]
    assert len(wd14) == 16 and all(m.character_threshold == 0.85 and m.repo_id.startswith("SmilingWolf/") for m in wd14)
    mld = [m for m in KNOWN_MODELS if m.family == "mld"]
    assert {m.repo_id for m in mld} == {"deepghs/ml-danbooru-onnx"} and all(m.general_threshold == 0.7 for m in mld)
    aliases = [a for m in KNOWN_MODELS for a in m.aliases]
    assert len(aliases) == len(set(aliases)) and not set(aliases) & set(names)  # every name means one model


def test_dropped_in_folders_are_listed_by_name(tmp_path, tiny):
    shutil.copytree(tiny, tmp_path / "my-own-tagger")
    shutil.copytree(tiny, tmp_path / "wd-vit-tagger-v3")
    (tmp_path / "half-copied").mkdir()
    (tmp_path / "half-copied" / "model.onnx").write_bytes(b"x")  # no selected_tags.csv: not a model
    entries = {e.name: e for e in list_models(tmp_path)}
    assert entries["my-own-tagger"].is_local and entries["my-own-tagger"].spec is None
    assert entries["wd-vit-tagger-v3"].is_local and not entries["wd-convnext-tagger-v3"].is_local
    assert "half-copied" not in entries


def test_names_of_the_older_extension_still_resolve(tmp_path):
    assert find_model("wd14-vit-v2-git", tmp_path).name == "wd-v1-4-vit-tagger-v2"
    assert find_model("wd-v1-4-moat-tagger.v2", tmp_path).name == "wd-v1-4-moat-tagger-v2"
    with pytest.raises(ModelNotFoundError, match="wd-vit-tagger-v3"):
        find_model("no-such-model", tmp_path)


@pytest.fixture()
def fake_hub(monkeypatch, tiny):
    calls = []

    def fake_download(repo_id, filename, revision=None, local_dir=None, **_):
        calls.append((repo_id, filename))
        partial = local_dir / ".cache" / "huggingface" / "download" / f"{filename}.etag.incomplete"
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(b"0" * 10)
        shutil.copy(tiny / filename, local_dir / filename)
        partial.unlink()
        return str(local_dir / filename)

    class Meta:
        size = 100

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url: Meta())
    monkeypatch.setattr(huggingface_hub, "hf_hub_url", lambda repo, name, revision=None: f"{repo}/{name}")
    return calls


def test_download_fills_the_models_folder_with_progress(tmp_path, fake_hub):
    spec = KNOWN_MODELS[0]
    seen = []
    folder = download_model(spec, tmp_path, lambda f, text: seen.append((f, text)))
    assert folder == tmp_path / spec.name and (folder / "model.onnx").exists()
    assert [c[1] for c in fake_hub] == ["selected_tags.csv", "model.onnx"]
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and spec.repo_id in seen[0][1]
    download_model(spec, tmp_path)  # already complete: no second download
    assert len(fake_hub) == 2


def test_download_failure_explains_the_manual_route(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", offline)
    with pytest.raises(DownloadError, match="put them into .*wd-eva02-large-tagger-v3"):
        download_model(KNOWN_MODELS[0], tmp_path)


def test_service_downloads_on_first_use_and_respects_the_offline_setting(tmp_path, fake_hub):
    offline = TaggerService(TaggerConfig(str(tmp_path), use_gpu=False, allow_download=False))
    assert offline.model_names() == []
    with pytest.raises(ModelNotFoundError, match="downloads are off"):
        offline.load("wd-vit-tagger-v3")
    online = TaggerService(TaggerConfig(str(tmp_path), use_gpu=False))
    assert "wd-vit-tagger-v3" in online.model_names()
    result = online.interrogate("wd-vit-tagger-v3", Image.new("RGB", (8, 8), "white"), TagOptions())
    assert "1girl" in result.tags and len(fake_hub) == 2
    assert offline.model_names() == ["wd-vit-tagger-v3"]  # now on disk, usable offline
    assert "on CPU" in online.status("wd-vit-tagger-v3")


def test_default_options_use_the_models_thresholds(tmp_path):
    service = TaggerService(TaggerConfig(str(tmp_path)))
    options = service.default_options("wd-vit-tagger-v3", max_tags=5)
    assert options.general_threshold == pytest.approx(0.2614) and options.max_tags == 5


def test_gpu_problem_messages():
    both = gpu_problem([CUDA, CPU], [CPU], True, ["onnxruntime==1.20.1", "onnxruntime-gpu==1.20.1"])
    assert "several onnxruntime packages" in both and "pip uninstall" in both
    broken = gpu_problem([CUDA, CPU], [CPU], True, ["onnxruntime-gpu==1.20.1"])
    assert "CUDA provider failed" in broken
    assert gpu_problem([CPU], [CPU], True, ["onnxruntime==1.20.1"]) == ""  # CPU build: expected, not a problem
    assert gpu_problem([CUDA, CPU], [CUDA, CPU], True, ["onnxruntime-gpu==1.20.1"]) == ""
    assert gpu_problem([CUDA, CPU], [CPU], False, ["onnxruntime-gpu==1.20.1"]) == ""


def test_unload_frees_sessions_and_reloads_on_demand(tiny):
    manager = ModelManager(use_gpu=False)
    first = manager.get("tiny", tiny)
    assert manager.get("tiny", tiny) is first  # cached
    assert manager.unload_all() == 1 and first.session is None and manager.loaded_names() == []
    again = manager.get("tiny", tiny)
    assert again is not first and again.session is not None


def test_a_broken_gpu_package_falls_back_to_the_cpu_with_a_message(tiny, monkeypatch):
    import onnxruntime as ort

    from lib_lora_train.tagger import runtime

    real_session = ort.InferenceSession

    def session(path, options, providers):
        if CUDA in providers:
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return real_session(path, options, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(runtime, "installed_onnxruntime_packages", lambda: ["onnxruntime-gpu==1.20.1"])
    tagger = runtime.LoadedTagger("tiny", tiny, use_gpu=True)
    assert tagger.providers == [CPU] and not tagger.on_gpu
    assert "CUDA provider failed to start" in tagger.warning
    cpu_only = runtime.LoadedTagger("tiny", tiny, use_gpu=False)  # asked for the CPU: no complaint
    assert cpu_only.warning == ""
