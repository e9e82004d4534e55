"""gradio 3.41 / 4.40 and pydantic 1 / 2 differences live in one module each (ui/gradio_compat.py,
ui/pydantic_compat.py); everything else is written once for both hosts."""

import re
from pathlib import Path

import pytest

from lib_lora_train.ui import gradio_compat, pydantic_compat

UI = Path(__file__).resolve().parents[1] / "lib_lora_train"


@pytest.mark.parametrize(("major", "js", "upload"), [(3, "_js", {"source": "upload"}), (4, "js", {"sources": ["upload"]})])
def test_gradio_keywords_follow_the_host_version(monkeypatch, major, js, upload):
    monkeypatch.setattr(gradio_compat, "GRADIO_MAJOR", major)
    assert gradio_compat.js("() => 1") == {js: "() => 1"} and gradio_compat.js(None) == {}
    assert gradio_compat.upload_only() == upload
    assert gradio_compat.plot_size(500, 250) == ({"width": 500, "height": 250} if major == 3 else {"height": 250})
    # gradio 3.41 has no per-listener limit (the WebUI's queue lets 64 run); gradio 4 runs one at a time unless told
    assert gradio_compat.no_concurrency_limit() == ({} if major == 3 else {"concurrency_limit": None})


def test_strict_models_refuse_unknown_fields_and_dump_to_dicts():
    from pydantic import ValidationError

    class Body(pydantic_compat.StrictModel):
        name: str

    assert pydantic_compat.model_dict(Body(name="a")) == {"name": "a"}
    with pytest.raises(ValidationError):
        Body(name="a", nmae="b")


# what would tie a file to one gradio or pydantic version
VERSION_BOUND = {
    r"\b_js\s*=": "gradio_compat.js",
    r"\bsource\s*=\s*\"upload\"": "gradio_compat.upload_only",
    r"\.dict\(\)": "pydantic_compat.model_dict",
    r"class Config\s*:": "pydantic_compat.StrictModel",
    r"\bconcurrency_limit\s*=": "gradio_compat.no_concurrency_limit",
}


def test_no_version_bound_call_outside_the_compat_modules():
    offenders = []
    for path in sorted(UI.rglob("*.py")):
        if path.name in ("gradio_compat.py", "pydantic_compat.py"):
            continue
        text = path.read_text(encoding="utf-8")
        for pattern, instead in VERSION_BOUND.items():
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(UI)}: {pattern} (use {instead})")
    assert offenders == []
